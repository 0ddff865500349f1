"""Integer arithmetic on sizes (elements, bits, bytes, cycles): exact on Python integers."""


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
