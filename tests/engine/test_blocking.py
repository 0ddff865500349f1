"""Loop blocking of products larger than their buffers (simulator/engine/blocking.py): the search finds the
brute-force optimum, never moves more than the streamed accounting, and changes nothing when off."""

from __future__ import annotations

import random

import pytest
from conftest import preset_with

from simulator.engine import simulate
from simulator.engine.blocking import (
    Blocking,
    Buffers,
    Operands,
    best_blocking,
    block_counts,
    candidates,
    dram_bytes,
    reference_blocking,
    streamed,
)
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import policy_from_dict
from simulator.units import ceil_div
from workloads.builder import OpBuilder

BF16 = policy_from_dict({"name": "bf16", "hardware": "tpu_v3_core", "precision": {"default": "bf16"}})


def random_case(rng: random.Random) -> tuple[Operands, Buffers]:
    """Sizes of any format (bytes need not divide into rows), buffers from a row's worth to many."""
    m, n, k = rng.randint(1, 40), rng.randint(1, 40), rng.randint(1, 64)
    a_bytes, b_bytes = ceil_div(m * k * rng.choice((3, 4, 8, 16)), 8), ceil_div(k * n * rng.choice((3, 4, 8, 16)), 8)
    operands = Operands(m, n, a_bytes, b_bytes, ceil_div(n, rng.choice((2, 4))), rng.choice((1, ceil_div(m, 4))),
                        rng.random() < 0.8, rng.random() < 0.8)
    accumulator = rng.choice((2, 4))

    def capacity(unit: int) -> int:  # often within a few units, where a block is one or two rows
        return rng.randint(1, 3 * unit) if rng.random() < 0.4 else rng.randint(16, 4000)

    buffers = Buffers(capacity(ceil_div(a_bytes, m)), capacity(ceil_div(b_bytes, n)), capacity(accumulator * n),
                      accumulator)
    return operands, buffers


@pytest.mark.parametrize("seed", range(3))
def test_the_search_finds_the_fewest_bytes_over_every_tile_shape(seed):
    """Two fidelities: the searched schedules against every (rows, columns) shape by brute force."""
    rng = random.Random(seed)
    for _ in range(150):
        operands, buffers = random_case(rng)
        chosen = best_blocking(operands, buffers)
        assert dram_bytes(chosen, operands) == reference_blocking(operands, buffers), (operands, buffers)
        assert all(type(c.rows) is int and type(c.cols) is int for c in candidates(operands, buffers))
        assert dram_bytes(chosen, operands) <= dram_bytes(streamed(operands, buffers), operands)


def test_the_block_counts_are_every_count_a_width_makes():
    for n in range(1, 400):
        assert block_counts(n) == {ceil_div(n, width) for width in range(1, n + 1)}


def test_an_operand_as_large_as_its_buffer_fits_it():
    buffers = Buffers(4096, 2048, 1 << 20, 4)
    assert streamed(Operands(64, 64, 4096, 2048, 3, 5, True, True), buffers) == Blocking("streamed", 1, 1, 64, 64)
    assert streamed(Operands(64, 64, 4097, 2049, 3, 5, True, True), buffers) == Blocking("streamed", 3, 5, 64, 64)


def test_the_fewest_bytes_win_and_ties_keep_the_earlier_schedule():
    """A (2 KiB, 64 B a row) overflows a 1 KiB buffer by twice; B fits. Streamed fetches A per sweep (4);
    a_blocks holds 16 rows and fetches B once per block (2): 2 KiB + 2 x 256 B beats streamed's 8 KiB + 256 B;
    b_blocks holds every column (B once) but fetches A per column block: one block, the same 2 KiB + 256 B,
    the least; with B on chip a_blocks and b_blocks tie at A once, and the earlier, a_blocks, is kept."""
    operands = Operands(32, 8, 2048, 256, 4, 1, True, True)
    buffers = Buffers(1024, 1024, 64, 4)
    assert best_blocking(operands, buffers) == Blocking("b_blocks", 1, 1, 32, 8)
    on_chip = Operands(32, 8, 2048, 256, 4, 1, True, False)
    assert best_blocking(on_chip, buffers).schedule == "a_blocks"
    # a block is whole rows: 999 bytes hold 15 rows of 64 (not 15.6), so 31 rows take 3 blocks
    assert candidates(Operands(31, 8, 31 * 64, 256, 4, 1, True, True), Buffers(999, 64, 64, 4))[1] == Blocking(
        "a_blocks", 1, 3, 15, 8)


def test_a_product_that_fits_its_buffers_stays_streamed():
    operands = Operands(64, 64, 64 * 128, 128 * 64, 2, 1, True, True)
    assert best_blocking(operands, Buffers(1 << 20, 1 << 20, 1 << 20, 4)) == Blocking("streamed", 1, 1, 64, 64)


def test_each_schedule_by_its_closed_form():
    """A and B of 1 MiB each (1,024 x 1,024 bytes). With 64 KiB buffers, streamed fetches A per sweep (8) and
    B once: 9 MiB; a_blocks holds 64 rows of A: A once, B per block (16): 17 MiB; so streamed stays. With 8
    KiB buffers a block holds 8 rows (or columns): 1 + 128 either way, while tiles of partial sums in a 16 KiB
    accumulator (4,096 of 4 bytes, 64 x 64) fetch A once per 16 column blocks and B once per 16 row blocks:
    32 MiB, the least (A x ceil(1024 / Nb) + B x ceil(1024 / Mb) with Mb x Nb <= 4,096)."""
    mib = 1 << 20
    operands = Operands(1024, 1024, mib, mib, 8, 1, True, True)
    roomy = Buffers(64 * 1024, 64 * 1024, 16 * 1024, 4)
    assert candidates(operands, roomy) == [Blocking("streamed", 8, 1, 1024, 1024),
                                           Blocking("a_blocks", 1, 16, 64, 1024),
                                           Blocking("b_blocks", 16, 1, 1024, 64),
                                           Blocking("output_tiles", 16, 16, 64, 64)]
    assert [dram_bytes(c, operands) // mib for c in candidates(operands, roomy)] == [9, 17, 17, 32]
    assert best_blocking(operands, roomy) == Blocking("streamed", 8, 1, 1024, 1024)
    tight = Buffers(8 * 1024, 8 * 1024, 16 * 1024, 4)
    assert [dram_bytes(c, operands) // mib for c in candidates(operands, tight)] == [9, 129, 129, 32]
    os_like = Operands(1024, 1024, mib, mib, 64, 64, True, True)  # sweeps of an output-stationary dataflow
    tiled = best_blocking(os_like, tight)
    assert tiled.schedule == "output_tiles" and (tiled.a_fetches, tiled.b_fetches) == (16, 16)
    assert tiled.rows * tiled.cols * 4 <= 16 * 1024


def test_an_operand_on_chip_costs_nothing_to_fetch_again():
    operands = Operands(1024, 1024, 1 << 20, 1 << 20, 8, 1, False, True)  # A lives on chip
    chosen = best_blocking(operands, Buffers(64 * 1024, 64 * 1024, 16 * 1024, 4))
    assert chosen.b_fetches == 1 and dram_bytes(chosen, operands) == 1 << 20


def one_gemm(m: int, k: int, n: int):
    builder = OpBuilder()
    builder.input("x", m * k)
    builder.gemm("op", 0, "ffn1", "ffn", m, k, n, bias=False)
    return builder.build_trace("one", {"batch": 1})


def test_a_blocked_gemm_on_tpu_v3_core_moves_what_its_schedule_says():
    """8192 x 12288 x 12288 in bf16: A (192 MiB) and B (288 MiB) overflow 8 and 4 MiB buffers. Unblocked, A
    comes once per sweep of each array's 6,144 columns (48 sweeps); blocked, the engine's bytes are the
    operands' fetches under the chosen schedule plus the output once, and the run is compute bound either way
    (the same cycles)."""
    m, k, n = 8192, 12288, 12288
    on = load_hardware("tpu_v3_core")
    off = preset_with("tpu_v3_core", memory={"loop_blocking": False})
    blocked, plain = simulate(one_gemm(m, k, n), on, BF16), simulate(one_gemm(m, k, n), off, BF16)
    a, b, out = 2 * m * k, 2 * k * n, 2 * m * n
    assert int(plain.dram_bytes.sum()) == a * 48 + b + out
    mem = on.memory
    chosen = best_blocking(Operands(m, n, a, b, 48, 1, True, True),
                           Buffers(mem.ifmap_buffer_bytes, mem.filter_buffer_bytes, mem.ofmap_buffer_bytes, 4))
    assert chosen.schedule == "output_tiles"
    assert int(blocked.dram_bytes.sum()) == dram_bytes(chosen, Operands(m, n, a, b, 48, 1, True, True)) + out
    assert int(blocked.dram_bytes.sum()) < int(plain.dram_bytes.sum()) / 2
    assert blocked.totals.total_cycles <= plain.totals.total_cycles


def test_blocking_is_off_unless_a_preset_sets_it():
    """The TPUs' presets block (XLA does); the others keep the streamed accounting (the SCALE-Sim and ZigZag
    checks run on them)."""
    for name in ("rapid_like", "rapid_like_4core", "tpu_v1_like"):
        assert load_hardware(name).memory.loop_blocking is False
    for name in ("tpu_v3_core", "tpu_v5e_like"):
        assert load_hardware(name).memory.loop_blocking is True
