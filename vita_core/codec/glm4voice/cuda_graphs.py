"""CUDA-graph replay of the flow estimator.

The U-Net runs about a thousand small kernels per Euler step, so on a GPU its cost is kernel
launches, not arithmetic. Capturing one step as a CUDA graph per input shape and replaying it
removes the launches; the arithmetic, and so the result, is the same as running it eagerly.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

Entry = tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]


class GraphedModule:
    """Runs `module(*tensors)` through a CUDA graph per input shapes (an LRU of `max_graphs`).

    A capture costs a few eager calls, so a shape is captured only when a second solve uses it:
    the recurring shapes (every full streaming chunk) are replayed, one-off shapes (a final chunk,
    a one-shot decode) run eagerly.
    """

    def __init__(self, module: nn.Module, max_graphs: int = 8, warmup: int = 2) -> None:
        self.module, self.max_graphs, self.warmup = module, max_graphs, warmup
        self.graphs: OrderedDict[tuple, Entry] = OrderedDict()
        self.seen: OrderedDict[tuple, None] = OrderedDict()
        self.pool = torch.cuda.graph_pool_handle()

    def prepare(self, *args: torch.Tensor) -> Callable[..., torch.Tensor]:
        """The callable to use for a solve whose steps all take tensors shaped like `args`."""
        key = tuple((tuple(a.shape), a.dtype) for a in args)
        if key in self.graphs:
            self.graphs.move_to_end(key)
            return self._replayer(self.graphs[key])
        if key not in self.seen:
            self.seen[key] = None
            if len(self.seen) > 64:
                self.seen.popitem(last=False)
            return self.module
        self.graphs[key] = self._capture(args)
        if len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        return self._replayer(self.graphs[key])

    def _capture(self, args: tuple[torch.Tensor, ...]) -> Entry:
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

    @staticmethod
    def _replayer(entry: Entry) -> Callable[..., torch.Tensor]:
        graph, static, out = entry

        def replay(*args: torch.Tensor) -> torch.Tensor:
            for buffer, value in zip(static, args):
                buffer.copy_(value)
            graph.replay()
            return out.clone()

        return replay
