"""XMem's memory: the affinity math, the key-value stores and the working / long-term memory manager.

Keys are `float[1, CK, N]` over N memory elements (one per feature pixel of a memory frame), shrinkage
`float[1, 1, N]`, selection `float[1, CK, N]`, values `float[K, CV, N]` for K objects. Reading uses the
anisotropic L2 similarity with shrinkage and selection and a top-k softmax; memory elements count how much they
are used (affinity summed over the query pixels) and how long they lived. When the working memory reaches
`max_mid_term_frames` frames, everything between the first frame and the newest `min_mid_term_frames - 1` frames is
consolidated into `num_prototypes` prototypes (the most used elements, their values and shrinkage read out from the
candidates) that join the long-term memory; a full long-term memory first drops its least used elements.

vrsjax gives masks on the first frame of a run only, so all objects form one object group: the official
multi-group bookkeeping (objects entering later) reduces to a single value tensor per store, with identical
results. Arithmetic follows the official order so outputs match to float32 rounding.
"""

from __future__ import annotations

import math

import torch


def get_similarity(
    mk: torch.Tensor, ms: torch.Tensor | None, qk: torch.Tensor, qe: torch.Tensor | None
) -> torch.Tensor:
    """Negative shrunk, selected squared distance between memory and query keys.

    mk float[B, CK, N], ms float[B, 1, N] | None, qk float[B, CK, M], qe float[B, CK, M] | None -> float[B, N, M]:
    `(-sum_c e mk^2 + 2 sum_c mk q e - sum_c e q^2) * s / sqrt(CK)`; without selection `-|mk|^2 + 2 mk.q`.
    """
    ck = mk.shape[1]
    mk, qk = mk.flatten(start_dim=2), qk.flatten(start_dim=2)
    ms = ms.flatten(start_dim=1).unsqueeze(2) if ms is not None else None
    if qe is not None:
        qe = qe.flatten(start_dim=2)
        mk_t = mk.transpose(1, 2)
        a_sq = mk_t.pow(2) @ qe
        two_ab = 2 * (mk_t @ (qk * qe))
        b_sq = (qe * qk.pow(2)).sum(1, keepdim=True)
        similarity = -a_sq + two_ab - b_sq
    else:
        a_sq = mk.pow(2).sum(1).unsqueeze(2)
        similarity = -a_sq + 2 * (mk.transpose(1, 2) @ qk)
    return similarity * ms / math.sqrt(ck) if ms is not None else similarity / math.sqrt(ck)


def do_softmax(similarity: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
    """Softmax over the memory axis (dim 1) of float[B, N, M], keeping only the top_k entries per query when given.

    The top-k branch exponentiates the raw similarities without subtracting their maximum, as XMem does (the
    similarities are negative distances); the full softmax subtracts it.
    """
    if top_k is not None:
        if top_k > similarity.shape[1]:
            raise ValueError(
                f"top_k={top_k} is larger than the {similarity.shape[1]} memory elements to read from (one memory "
                "frame has (H/16)*(W/16) elements after padding to a multiple of 16): lower top_k or use larger frames"
            )
        values, indices = torch.topk(similarity, k=top_k, dim=1)
        # In place as in XMem: under CUDA autocast, out-of-place exp and division would switch to float32.
        x_exp = values.exp_()
        x_exp /= torch.sum(x_exp, dim=1, keepdim=True)
        return torch.zeros_like(similarity).scatter_(1, indices, x_exp)
    x_exp = torch.exp(similarity - torch.max(similarity, dim=1, keepdim=True)[0])
    return x_exp / torch.sum(x_exp, dim=1, keepdim=True)


def readout(affinity: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Affinity-weighted memory values: affinity float[1, N, M], values float[K, C, N] -> float[K, C, M]."""
    return values @ affinity


class KeyValueStore:
    """Keys, shrinkage, optional selection, values of one object group, and usage counts when `count_usage`."""

    def __init__(self, count_usage: bool):
        self.count_usage = count_usage
        self.key = self.shrinkage = self.selection = self.value = None
        self.use_count = self.life_count = None

    @property
    def size(self) -> int:
        return 0 if self.key is None else self.key.shape[-1]

    def add(self, key, value, shrinkage, selection=None) -> None:
        """Append N elements: key float[1, CK, N], value float[K, CV, N], shrinkage float[1, 1, N], selection."""
        count = torch.zeros((key.shape[0], 1, key.shape[2]), device=key.device, dtype=torch.float32)
        life = torch.zeros((key.shape[0], 1, key.shape[2]), device=key.device, dtype=torch.float32) + 1e-7
        if self.key is None:
            self.key, self.shrinkage, self.selection, self.value = key, shrinkage, selection, value
            self.use_count, self.life_count = count, life
            return
        self.key = torch.cat([self.key, key], -1)
        self.value = torch.cat([self.value, value], -1)
        if shrinkage is not None:
            self.shrinkage = torch.cat([self.shrinkage, shrinkage], -1)
        if selection is not None:
            self.selection = torch.cat([self.selection, selection], -1)
        self.use_count = torch.cat([self.use_count, count], -1)
        self.life_count = torch.cat([self.life_count, life], -1)

    def update_usage(self, usage: torch.Tensor) -> None:
        """Add one read's affinity mass per element (float[N]) and age every element by one read."""
        if self.count_usage:
            self.use_count = self.use_count + usage.view_as(self.use_count)
            self.life_count = self.life_count + 1

    def usage(self) -> torch.Tensor:
        """Mean affinity mass per read, float[1, 1, N]."""
        if not self.count_usage:
            raise RuntimeError("this memory store does not count usage")
        return self.use_count / self.life_count

    def _fields(self) -> list[str]:
        return ["key", "shrinkage", "selection", "value", "use_count", "life_count"]

    def slice(self, start: int, end: int) -> tuple:
        """(key, shrinkage, selection, usage) of elements [start, end); end 0 means to the end."""
        stop = None if end == 0 else end
        sliced = [None if t is None else t[:, :, start:stop] for t in (self.key, self.shrinkage, self.selection)]
        return (*sliced, self.usage()[:, :, start:stop])

    def remove_range(self, start: int, end: int) -> None:
        """Keep the elements outside [start, end) (end 0 means to the end)."""
        for name in self._fields():
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t[:, :, :start] if end == 0 else torch.cat([t[:, :, :start], t[:, :, end:]], -1))

    def remove_obsolete(self, max_size: int) -> None:
        """Drop the least used elements down to at most `max_size` (ties at the threshold all go, as in XMem)."""
        usage = self.usage().flatten()
        lowest, _ = torch.topk(usage, k=self.size - max_size, largest=False, sorted=True)
        survived = usage > lowest[-1]
        for name in self._fields():
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t[:, :, survived])


class MemoryManager:
    """Working memory (the first memory frame is never consolidated) plus long-term memory of prototypes."""

    def __init__(self, config, hidden_dim: int):
        self.config = config
        self.hidden_dim = hidden_dim
        self.hidden = None
        self.hw = None
        self.work = KeyValueStore(count_usage=config.enable_long_term)
        self.long = KeyValueStore(count_usage=config.enable_long_term_count_usage)

    def match(self, query_key: torch.Tensor, selection: torch.Tensor) -> torch.Tensor:
        """Read the memory for one frame: query_key/selection float[1, CK, h, w] -> float[K, CV, h, w]."""
        h, w = query_key.shape[-2:]
        query_key = query_key.flatten(start_dim=2)
        selection = selection.flatten(start_dim=2) if selection is not None else None
        long_size = self.long.size if self.config.enable_long_term else 0
        if long_size:
            key = torch.cat([self.long.key, self.work.key], -1)
            shrinkage = torch.cat([self.long.shrinkage, self.work.shrinkage], -1)
            value = torch.cat([self.long.value, self.work.value], -1)
        else:
            key, shrinkage, value = self.work.key, self.work.shrinkage, self.work.value
        affinity = do_softmax(get_similarity(key, shrinkage, query_key, selection), self.config.top_k)
        if self.config.enable_long_term:
            usage = affinity.sum(dim=2)
            self.work.update_usage(usage[:, long_size:].flatten())
            if long_size:
                self.long.update_usage(usage[:, :long_size].flatten())
        out = readout(affinity, value)
        return out.view(out.shape[0], value.shape[1], h, w)

    def add(self, key, shrinkage, value, selection=None) -> None:
        """Store one memory frame (key float[1, CK, h, w], value float[1, K, CV, h, w]); consolidate when full."""
        if self.hw is None:
            self.hw = key.shape[-2] * key.shape[-1]
        selection = selection.flatten(start_dim=2) if selection is not None else None
        self.work.add(
            key.flatten(start_dim=2), value[0].flatten(start_dim=2), shrinkage.flatten(start_dim=2), selection
        )
        if not self.config.enable_long_term or self.work.size < self.config.max_mid_term_frames * self.hw:
            return
        room = self.config.max_long_term_elements - self.config.num_prototypes
        if self.long.size >= room:
            if not self.long.count_usage:
                raise ValueError(
                    f"the long-term memory is full ({self.long.size} >= max_long_term_elements - num_prototypes "
                    f"= {room}) but enable_long_term_count_usage is False, so XMem cannot choose what to drop: "
                    "set enable_long_term_count_usage=True or raise max_long_term_elements"
                )
            if self.long.size == room:
                # XMem fails here too (it asks torch.topk for the 0 least used elements and indexes the last one).
                raise ValueError(
                    f"the long-term memory holds exactly max_long_term_elements - num_prototypes = {room} elements, "
                    "where XMem's removal of obsolete elements fails: change max_long_term_elements or num_prototypes"
                )
            self.long.remove_obsolete(room)
        self.consolidate()

    def consolidate(self) -> None:
        """Turn the working memory between the first frame and the newest min_mid_term_frames - 1 frames into
        num_prototypes long-term prototypes and remove it: min_mid_term_frames frames stay in working memory."""
        hw, keep = self.hw, self.config.min_mid_term_frames * self.hw
        start, end = hw, hw - keep
        candidates = self.work.size - keep
        if self.config.min_mid_term_frames < 2 or candidates < self.config.num_prototypes:
            # XMem itself fails here (an empty value slice when min is 1, torch.topk out of range otherwise).
            raise ValueError(
                f"cannot consolidate {candidates} working-memory elements into num_prototypes="
                f"{self.config.num_prototypes} with min_mid_term_frames={self.config.min_mid_term_frames}: "
                "long-term memory needs min_mid_term_frames >= 2 and (max_mid_term_frames - min_mid_term_frames) "
                "* (H/16) * (W/16) >= num_prototypes; lower num_prototypes, use larger frames or enable_long_term=False"
            )
        key, shrinkage, selection, usage = self.work.slice(start, end)
        value = self.work.value[:, :, start:end]
        _, indices = torch.topk(usage, k=self.config.num_prototypes, dim=-1, sorted=True)
        indices = indices.flatten()
        proto_key = key[:, :, indices]
        proto_selection = selection[:, :, indices] if selection is not None else None
        affinity = do_softmax(get_similarity(key, shrinkage, proto_key, proto_selection))
        proto_value = readout(affinity, value)
        proto_shrinkage = readout(affinity, shrinkage) if shrinkage is not None else None
        self.work.remove_range(start, end)
        self.long.add(proto_key, proto_value, proto_shrinkage)

    def create_hidden(self, objects: int, key: torch.Tensor) -> None:
        """A zero hidden state float[1, K, CH, h, w] for the objects of the first frame."""
        h, w = key.shape[-2:]
        self.hidden = torch.zeros((1, objects, self.hidden_dim, h, w), device=key.device)
