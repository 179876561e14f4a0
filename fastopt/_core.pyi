# Hand-written stub of the compiled module (csrc/python/). Keep in step with optim_bindings.cpp.
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

Arrays = Union[np.ndarray, Sequence[np.ndarray]]

def sgd_(params: Arrays, grads: Arrays, momentum_buffers: Optional[Arrays] = None, *, lr: float,
         momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
         maximize: bool = False, step: int = 1) -> None: ...
def adagrad_(params: Arrays, grads: Arrays, state_sums: Arrays, *, lr: float = 1e-2, lr_decay: float = 0.0,
             weight_decay: float = 0.0, eps: float = 1e-10, maximize: bool = False, step: int) -> None: ...
def rmsprop_(params: Arrays, grads: Arrays, square_avgs: Arrays, momentum_buffers: Optional[Arrays] = None,
             grad_avgs: Optional[Arrays] = None, *, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
             weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
             maximize: bool = False) -> None: ...
def adam_(params: Arrays, grads: Arrays, exp_avgs: Arrays, exp_avg_sqs: Arrays,
          max_exp_avg_sqs: Optional[Arrays] = None, *, lr: float = 1e-3, beta1: float = 0.9,
          beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
          maximize: bool = False, step: int) -> None: ...
def adamw_(params: Arrays, grads: Arrays, exp_avgs: Arrays, exp_avg_sqs: Arrays,
           max_exp_avg_sqs: Optional[Arrays] = None, *, lr: float = 1e-3, beta1: float = 0.9,
           beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
           maximize: bool = False, step: int) -> None: ...
def build_info() -> Dict[str, Any]: ...
