"""Frame KV memory: the store (what is kept), policies (what is attended), and the per-chunk reader (what is read)."""

from relaxforcing.memory.policies import POLICIES, MemoryPolicy, StoreView, build_policy
from relaxforcing.memory.reader import MemoryReader
from relaxforcing.memory.store import FrameStore
from relaxforcing.memory.view import ROLES, MemoryView

__all__ = ["POLICIES", "ROLES", "FrameStore", "MemoryPolicy", "MemoryReader", "MemoryView", "StoreView", "build_policy"]
