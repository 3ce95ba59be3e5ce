"""What a launcher computed for one call signature, kept for the next identical call, and the
CUDA-graph safety of the tables it copies to the device.

On a GPU the small layers of a CNN take microseconds, so the Python work around each launch
(argument checks, geometry, output layout, launch options) decides the race against torch's
eager ops. That work depends only on the call's signature (shapes, strides, dtype, device,
options), so it is done once per signature and looked up afterwards:

    host_cached(maxsize)      a bounded LRU over a pure function of hashable arguments
                              (functools' C implementation: a hit costs ~0.2 us)
    SignatureCache            a bounded cache filled by the caller, for work that needs the
                              call's tensors on a miss (argument validation)
    device_table(maxsize)     the same for a function that builds a tensor on the device (an
                              index table, tap bits); a miss is one host-to-device copy

CUDA graphs. A graph replays the kernels and copies recorded during capture, so a table copied
from the host during capture would be captured as a copy from host memory that may be gone by
the replay. A call that was made once before capture finds every table in the cache and copies
nothing; a miss during capture raises ``TableMissDuringCapture`` instead of capturing a copy.

Counters (``cache_stats``) make the mechanism testable without a GPU: hits, misses, and the
tables built, per cache.
"""
import collections
import functools

import torch

DEFAULT_SIZE = 256  # signatures per cache: a whole network's layers, train and eval batches

CACHES = {}  # name -> its cache (functools wrapper or SignatureCache): cache_stats, clear_caches
TABLES_BUILT = {}  # device_table name -> tables built (each one host-to-device copy)
CacheInfo = collections.namedtuple("CacheInfo", "hits misses maxsize currsize")  # functools'


class TableMissDuringCapture(RuntimeError):
    """A launcher needed a device table that was not cached when CUDA graph capture began."""


def capturing() -> bool:
    """Whether the current CUDA stream is being captured into a graph (never without CUDA)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _register(name: str, cached):
    CACHES[name] = cached  # a reloaded module's cache replaces its old one
    return cached


class SignatureCache:
    """A bounded cache from call signatures to what was validated or planned for them, for
    work that needs the call's tensors on a miss (so it cannot be a function of the key
    alone):

        entry = cache.get(key)
        if entry is None:
            entry = cache.put(key, plan(tensor, ...))   # may raise: nothing is stored then

    The key must hold everything the entry depends on, each part of an exact type (a bool
    equals 1 as a key: callers only build keys from values whose types they checked). Past
    ``maxsize`` the oldest signature is dropped first (first in, first out): a hit is one
    plain dict lookup, where reordering an LRU would cost as much again on every call, and
    a network's working set of signatures fits well within the bound anyway."""

    def __init__(self, name: str, maxsize: int = DEFAULT_SIZE):
        self.maxsize, self.hits, self.misses = maxsize, 0, 0
        self._entries = {}
        _register(name, self)

    def get(self, key):
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key, entry):
        entries = self._entries
        entries[key] = entry
        if len(entries) > self.maxsize:
            try:  # the oldest; another thread may have dropped it already
                del entries[next(iter(entries))]
            except (KeyError, StopIteration, RuntimeError):
                pass
        return entry

    def cache_info(self):
        return CacheInfo(self.hits, self.misses, self.maxsize, len(self._entries))

    def cache_clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0


def host_cached(maxsize: int = DEFAULT_SIZE):
    """Decorator: ``fn`` memoised on its (hashable, positional) arguments, least recently used
    entries dropped past ``maxsize``. ``fn`` must be pure: its result may depend on nothing but
    its arguments, and it must not copy anything to a device (that is ``device_table``).
    An exception is not cached: a refused call is refused again."""
    def decorate(fn):
        cached = functools.lru_cache(maxsize)(fn)
        return _register(f"{fn.__module__}.{fn.__qualname__}", cached)
    return decorate


def device_table(maxsize: int = 64):
    """Decorator for a function that builds a table on a device from hashable arguments (the
    device among them): cached like ``host_cached``, counted, and refused during CUDA graph
    capture on a miss (``TableMissDuringCapture``)."""
    def decorate(build):
        name = f"{build.__module__}.{build.__qualname__}"

        @functools.wraps(build)
        def build_outside_capture(*args):
            if capturing():
                raise TableMissDuringCapture(
                    f"cnn: {name} is not cached for this call, and the current CUDA stream is "
                    "being captured into a graph; copying the table now would capture a copy "
                    "from host memory. Run the same call once before torch.cuda.graph capture "
                    "begins (a warm-up iteration), so the table is on the device already.")
            TABLES_BUILT[name] += 1
            return build(*args)

        TABLES_BUILT[name] = 0
        return _register(name, functools.lru_cache(maxsize)(build_outside_capture))
    return decorate


def cache_stats() -> dict:
    """name -> {hits, misses, size, maxsize, tables_built} for every cache (tables_built only
    for device tables)."""
    stats = {}
    for name, cached in CACHES.items():
        info = cached.cache_info()
        stats[name] = dict(hits=info.hits, misses=info.misses, size=info.currsize,
                           maxsize=info.maxsize)
        if name in TABLES_BUILT:
            stats[name]["tables_built"] = TABLES_BUILT[name]
    return stats


def clear_caches() -> None:
    """Empty every cache and zero the counters (tests; memory after a change of model)."""
    for cached in CACHES.values():
        cached.cache_clear()
    for name in TABLES_BUILT:
        TABLES_BUILT[name] = 0


__all__ = ["DEFAULT_SIZE", "SignatureCache", "TableMissDuringCapture", "cache_stats", "capturing",
           "clear_caches", "device_table", "host_cached"]
