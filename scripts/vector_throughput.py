"""Reciprocal throughput, in core cycles, of the vector instructions the CPU kernels are built of.

Run from the repository root:
    PYTHONPATH=. python scripts/vector_throughput.py [--iterations 20000000] [--repeats 5]

Why: on a 2-core Zen 1 guest the AVX2 group step took about 12 cycles per group of eight kept
values although it is eight instructions, and the dense float16 GEMV sat at the ridge although
its loop is four conversions and four FMAs per 32 values; no PMU is exposed to the guest, so
what each instruction costs there has to be timed. Each case is a loop of eight independent
copies of one instruction (``ymm0``-``ymm7``, each its own dependency chain, so latencies up
to eight times the throughput stay hidden), written as inline assembly so that the compiler
cannot change it, compiled for this CPU with llvmlite's MCJIT and timed over
``--iterations`` trips (best of ``--repeats``). The clock comes from a loop of dependent
integer adds (one cycle each on every x86 core since the P6) timed the same way. Printed:
cycles per instruction; what a vendor table calls reciprocal throughput.
"""

from __future__ import annotations

import argparse
import ctypes
import time
from dataclasses import dataclass
from functools import cache

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

# Eight instructions per trip, each on its own register: enough independent chains to cover
# a latency up to eight times the reciprocal throughput.
COPIES = 8
# Bytes of the buffer memory operands read from (64-byte aligned, in L1).
BUFFER_BYTES = 4096


@dataclass(frozen=True)
class Case:
    name: str
    template: str  # one instruction; {r} is the chain's register number (0-7)
    features: tuple = ("avx2",)
    setup: str = ""  # run once before the loop (registers 8-15 as constant operands)


CASES = (
    Case("vfmadd231ps ymm", "vfmadd231ps %ymm9, %ymm8, %ymm{r}"),
    Case("vblendps ymm, imm", "vblendps $$0xcc, %ymm8, %ymm{r}, %ymm{r}"),
    Case("vpshufb ymm", "vpshufb %ymm8, %ymm{r}, %ymm{r}"),
    Case("vpermilps ymm (variable)", "vpermilps %ymm8, %ymm{r}, %ymm{r}"),
    Case("vpermilps xmm (variable)", "vpermilps %xmm8, %xmm{r}, %xmm{r}"),
    Case("vpermps ymm", "vpermps %ymm{r}, %ymm8, %ymm{r}"),
    Case("vpsrlvd ymm", "vpsrlvd %ymm8, %ymm{r}, %ymm{r}"),
    Case("vpsrlvd xmm", "vpsrlvd %xmm8, %xmm{r}, %xmm{r}"),
    Case("vpsrld ymm, imm", "vpsrld $$3, %ymm{r}, %ymm{r}"),
    Case("vcvtph2ps ymm, xmm", "vcvtph2ps %xmm8, %ymm{r}", ("avx2", "f16c")),
    Case("vmovups ymm, m256", "vmovups {m}(%rsi), %ymm{r}"),
    Case("vinsertf128 ymm, m128", "vinsertf128 $$1, {m}(%rsi), %ymm{r}, %ymm{r}"),
    Case("vpbroadcastd ymm, m32", "vpbroadcastd {m}(%rsi), %ymm{r}"),
    Case("vpmovsxbd ymm, m64", "vpmovsxbd {m}(%rsi), %ymm{r}"),
    Case("vpermt2ps zmm", "vpermt2ps %zmm9, %zmm8, %zmm{r}", ("avx512f",)),
    Case("vcompressps zmm{k}", "vcompressps %zmm8, %zmm{r}{{%k1}}", ("avx512f",),
         setup="movl $$0x5555, %eax\n\tkmovw %eax, %k1"),
    Case("vcvtph2ps zmm, ymm", "vcvtph2ps %ymm8, %zmm{r}", ("avx512f",)),
)
# The clock reference: dependent 64-bit adds, one cycle of latency each.
CLOCK_TEMPLATE = "addq %rdx, %rax"


def _loop_asm(body: list[str], setup: str = "") -> str:
    """A counted loop around ``body`` (rdi trips, counted down in rcx); rsi points at the
    operand buffer."""
    lines = [setup] if setup else []
    lines += ["vxorps %ymm8, %ymm8, %ymm8", "vxorps %ymm9, %ymm9, %ymm9",
              "xorl %eax, %eax", "movl $$1, %edx", "movq %rdi, %rcx", "1:"]
    lines += body + ["decq %rcx", "jnz 1b"]
    return "\n\t".join(lines)


def _body(case: Case) -> list[str]:
    return [case.template.format(r=r, m=64 * r) for r in range(COPIES)]


def compile_loop(body: list[str], setup: str = ""):
    """(engine, ``f(trips, buffer_address)``): ``body`` in :func:`_loop_asm`'s loop, compiled
    for this CPU (keep the engine alive while calling ``f``)."""
    _initialize()
    return _compile(_loop_asm(body, setup))


@cache
def _initialize() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()  # MCJIT assembles the inline assembly


def _compile(asm: str):
    """A ``void f(i64 trips, i8* buffer)`` running ``asm``, compiled for this CPU."""
    module = ir.Module(name="vector_throughput")
    fn_type = ir.FunctionType(ir.VoidType(), [ir.IntType(64), ir.IntType(8).as_pointer()])
    fn = ir.Function(module, fn_type, name="run")
    builder = ir.IRBuilder(fn.append_basic_block())
    clobbers = ",".join([f"~{{xmm{i}}}" for i in range(16)]
                        + ["~{rax}", "~{rcx}", "~{rdx}", "~{k1}", "~{dirflag}", "~{fpsr}", "~{flags}",
                           "~{memory}"])
    inline = ir.InlineAsm(ir.FunctionType(ir.VoidType(), [ir.IntType(64),
                                                          ir.IntType(8).as_pointer()]),
                          asm, "{rdi},{rsi}," + clobbers, side_effect=True)
    builder.call(inline, fn.args)
    builder.ret_void()
    target = llvm.Target.from_default_triple()
    machine = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                           features=llvm.get_host_cpu_features().flatten(),
                                           opt=2)
    parsed = llvm.parse_assembly(str(module))
    engine = llvm.create_mcjit_compiler(parsed, machine)
    engine.finalize_object()
    address = engine.get_function_address("run")
    return engine, ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(address)


# Untimed trips before each case's timings (the code path and the core's clock warm up).
WARMUP_TRIPS = 1000


def _best_seconds(fn, trips: int, buffer: np.ndarray, repeats: int) -> float:
    fn(WARMUP_TRIPS, buffer.ctypes.data)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(trips, buffer.ctypes.data)
        best = min(best, time.perf_counter() - start)
    return best


def host_features() -> set[str]:
    return {name for name, on in llvm.get_host_cpu_features().items() if on}


def measure(iterations: int, repeats: int, cases=CASES) -> tuple[float, list[tuple[str, float]]]:
    """(clock GHz, [(case name, cycles per instruction)]) for the cases this CPU runs."""
    buffer = np.zeros(BUFFER_BYTES // 8, dtype=np.float64)  # numpy aligns to 64 bytes here
    features = host_features()
    engine, clock_fn = compile_loop([CLOCK_TEMPLATE] * COPIES)
    clock_ghz = COPIES * iterations / _best_seconds(clock_fn, iterations, buffer, repeats) / 1e9
    results = []
    for case in cases:
        if not set(case.features) <= features:
            continue
        keep, fn = compile_loop(_body(case), case.setup)
        seconds = _best_seconds(fn, iterations, buffer, repeats)
        results.append((case.name, seconds * clock_ghz * 1e9 / (COPIES * iterations)))
        del keep
    del engine
    return clock_ghz, results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20_000_000,
                        help="loop trips per timing (eight instructions each)")
    parser.add_argument("--repeats", type=int, default=5, help="timings per case; best kept")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.repeats < 1:
        parser.error("--iterations and --repeats must be at least 1")
    clock_ghz, results = measure(args.iterations, args.repeats)
    print(f"{llvm.get_host_cpu_name()}: {clock_ghz:.2f} GHz from dependent adds; "
          f"best of {args.repeats} x {args.iterations} trips of {COPIES} independent copies")
    for name, cycles in results:
        print(f"  {name:<28} {cycles:5.2f} cycles per instruction")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
