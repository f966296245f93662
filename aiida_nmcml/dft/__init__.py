"""DFT engine glue: turn a labelling protocol into QE / VASP work-chain inputs, and their outputs into frames."""
