"""Real circuits (Amaranth RTL) of the sparse datapath's metadata decoders and operand muxes,
their bit-exact simulation harness and their Yosys synthesis (:mod:`accel_sim.rtl.synth`)."""
