// kernels/cuda/elementwise.cu compiled as C++ for the CPU emulator.
#include "tests/emulation/emulator.h"
// (The emulator's spellings of the CUDA keywords must come first.)
#include "kernels/cuda/elementwise.cu"
