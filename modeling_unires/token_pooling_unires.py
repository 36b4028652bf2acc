"""The decoder's token pooling: visual tokens averaged over `decoder_token_stride`-sided cells of the patch grid, and
the cells' updates copied back onto their patches (`UniRESDecoder`; identity at stride 1, the paper's decoder).

Remote code beside `modeling_unires.py`: imports only torch.
"""

import math

import torch.nn.functional as F


def pooled_grid(grid, stride: int) -> tuple[int, int]:
    """`(rows, cols)` of the cells the decoder works on: the patch grid pooled by `decoder_token_stride`, a partial
    cell at the end of a row or column counting as one."""
    return math.ceil(grid[0] / stride), math.ceil(grid[1] / stride)


def pool_tokens(tokens, grid, stride: int):
    """Average `(batch, rows*cols, width)` tokens over `decoder_token_stride`-sided cells (identity at 1)."""
    if stride == 1:
        return tokens
    batch, _, width = tokens.shape
    rows, cols = grid
    if rows % stride == 0 and cols % stride == 0:
        # Whole cells: a mean over a view, with no transposed copy of the tokens.
        cells = tokens.view(batch, rows // stride, stride, cols // stride, stride, width).mean(dim=(2, 4))
        return cells.reshape(batch, -1, width)
    as_map = tokens.transpose(1, 2).reshape(batch, width, *grid)
    pooled = F.avg_pool2d(as_map, stride, ceil_mode=True)
    return pooled.flatten(2).transpose(1, 2)


def unpool_tokens(pooled, grid, stride: int):
    """Copy every pooled cell back onto the patches it covers: `(batch, cells, width)` to `(batch, rows*cols, width)`."""
    batch, _, width = pooled.shape
    as_map = pooled.transpose(1, 2).reshape(batch, width, *pooled_grid(grid, stride))
    as_map = as_map.repeat_interleave(stride, dim=2).repeat_interleave(stride, dim=3)[..., : grid[0], : grid[1]]
    return as_map.flatten(2).transpose(1, 2)


def add_unpooled(tokens, pooled, grid, stride: int):
    """`tokens + unpool_tokens(pooled, grid, stride)`; with whole cells, a broadcast add that makes no unpooled copy."""
    rows, cols = grid
    if rows % stride or cols % stride:
        return tokens + unpool_tokens(pooled, grid, stride)
    batch, _, width = tokens.shape
    fine = tokens.view(batch, rows // stride, stride, cols // stride, stride, width)
    coarse = pooled.view(batch, rows // stride, 1, cols // stride, 1, width)
    return (fine + coarse).view(batch, rows * cols, width)
