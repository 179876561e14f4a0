// Being written (CUDA backend, issue 5): implements part of backend.h.
