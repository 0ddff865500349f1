"""Lowering's last pass: the steps of each attention that runs fused are marked with their part of the
kernel (pure; the kernel is described in docs/engine.md, "Attention kernels")."""

from __future__ import annotations

from simulator.engine.attention import KernelBits, KernelChoice, KernelPart, Machine
from simulator.engine.steps import Step, evolve_step
from simulator.plan.binding import Plan
from workloads.errors import InputError
from workloads.ops import Tensor, evolve


def mark_kernels(steps: list[Step], tensors: dict[str, Tensor], plan: Plan) -> set[str]:
    """Mark, in place, the steps of each attention that runs fused (``Step.kernel``; the score ops it
    inserted learn the attention's geometry); return the kernels' scores and probabilities, which never
    leave the chip. Pinned blocks that cannot run are refused here."""
    hardware, policy = plan.hardware, plan.policy
    on_chip: set[str] = set()
    machine = Machine.of(hardware) if any(step.op.attention for step in steps) else None
    for index, step in enumerate(steps):
        op = step.op
        if (machine is None or step.unit != "array" or op.role != "bmm_qk" or op.attention is None
                or policy.attention_kernel(op) != "fused"):
            continue
        members, local = _kernel_members(steps, index)
        if members[-1][1] != "av" or steps[members[-1][0]].op.role != "bmm_av":
            raise InputError(f"{op.name}: no P V product reads its scores, so it cannot run as a fused kernel")
        av = steps[members[-1][0]]
        members += [(i, "epilogue") for i in _epilogue(steps, members[-1][0])]
        bits = KernelBits(tensors[step.reads[0]].bits, tensors[step.reads[1]].bits, tensors[av.reads[1]].bits,
                          hardware.sfu_precision.bits, hardware.accumulator_bits)
        config, geometry = policy.config.attention, op.attention
        choice = KernelChoice(bits, hardware.macs_per_pe[step.precision.name], config.block_q, config.block_k,
                              av.pattern.m if av.pattern is not None else 1)
        choice.blocks(geometry, geometry.keys_of(op), machine)
        for member, part in members:
            member_op = steps[member].op
            if member_op.attention is None:
                member_op = evolve(member_op, attention=geometry)
            steps[member] = evolve_step(steps[member], op=member_op, kernel=KernelPart(part, choice))
        on_chip.update(local)
    return on_chip


def _kernel_members(steps: list[Step], qk: int) -> tuple[list[tuple[int, str]], set[str]]:
    """The steps of the fused attention whose Q K^T is step ``qk``, with their parts, up to the P V product
    that reads its probabilities; and the tensors between them (scores and probabilities)."""
    local = set(steps[qk].writes)
    members = [(qk, "qk")]
    for index in range(qk + 1, len(steps)):
        step = steps[index]
        if not local.intersection(step.reads):
            continue
        if step.unit == "array":
            members.append((index, "av"))
            break
        role = step.op.role
        mask = role == "add" and set(step.reads) <= local  # a generated mask reads only the scores
        members.append((index, "softmax" if role == "softmax" else "mask" if mask else "scores"))
        local.update(step.writes)
    return members, local


def _epilogue(steps: list[Step], av: int) -> list[int]:
    """The vector steps that bring P V's output to the op's own output (its dequantize)."""
    output, chain, current = steps[av].op.writes[0], [], steps[av].writes[0]
    index = av + 1
    while current != output and index < len(steps):
        step = steps[index]
        if step.unit == "sfu" and current in step.reads:
            chain.append(index)
            current = step.writes[0]
        index += 1
    return chain if current == output else []
