"""Amaranth circuits of the operand muxes: an ``inputs``:1 multiplexer of ``width``-bit operands.

A ``full`` mux has M inputs and takes the kept position as its select; a ``sorted`` mux of slot
k has M - N + 1 inputs (positions k .. k + M - N, the only ones the k-th ascending kept position
can hold) and takes ``position - k``. Both are this circuit with a different input count.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .decoders import bits_for


class OperandMuxCircuit(wiring.Component):
    """``out`` = operand ``sel`` of ``operands`` (operand i at bits [i*width, (i+1)*width))."""

    def __init__(self, inputs: int, width: int):
        if inputs < 1 or width < 1:
            raise ValueError(f"operand mux needs inputs >= 1 and width >= 1, got {inputs}, "
                             f"{width}")
        self.inputs, self.width = inputs, width
        super().__init__({"operands": In(inputs * width), "sel": In(bits_for(inputs)),
                          "out": Out(width)})

    def elaborate(self, platform):
        m = Module()
        w = self.width
        choices = Array(self.operands[i * w:(i + 1) * w] for i in range(self.inputs))
        m.d.comb += self.out.eq(choices[self.sel])
        return m
