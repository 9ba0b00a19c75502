"""CUDA-graph replay of the flow estimator.

The U-Net runs about a thousand small kernels per Euler step, so on a GPU its cost is kernel
launches, not arithmetic. Capturing one step as a CUDA graph per input shape and replaying it
removes the launches; the arithmetic, and so the result, is the same as running it eagerly.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class GraphedModule:
    """Call `module(*tensors)` through a CUDA graph captured per input shapes (LRU of `max_graphs`)."""

    def __init__(self, module: nn.Module, max_graphs: int = 8, warmup: int = 2) -> None:
        self.module, self.max_graphs, self.warmup = module, max_graphs, warmup
        self.graphs: OrderedDict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = OrderedDict()
        self.pool = torch.cuda.graph_pool_handle()

    def _capture(self, args: tuple[torch.Tensor, ...]) -> tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]:
        static = [a.clone() for a in args]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self.module(*static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self.module(*static)
        return graph, static, out

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        key = tuple((tuple(a.shape), a.dtype) for a in args)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(args)
            self.graphs[key] = entry
            if len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
        else:
            self.graphs.move_to_end(key)
        graph, static, out = entry
        for buffer, value in zip(static, args):
            buffer.copy_(value)
        graph.replay()
        return out.clone()
