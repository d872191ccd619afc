#include "meta/ns/lock_table.h"

#include <algorithm>

namespace tessera::meta {

bool conflicts(const HeldLock& a, const HeldLock& b) {
  if (a.type == LockType::kUnlock || b.type == LockType::kUnlock) return false;
  if (a.sameOwner(b) || !a.overlaps(b)) return false;
  return a.type == LockType::kWrite || b.type == LockType::kWrite;
}

std::optional<HeldLock> findConflict(const std::vector<HeldLock>& held, const HeldLock& want) {
  for (const HeldLock& h : held) {
    if (conflicts(h, want)) return h;
  }
  return std::nullopt;
}

std::vector<HeldLock> applyToOwn(const std::vector<HeldLock>& own, const HeldLock& want) {
  std::vector<HeldLock> out;
  HeldLock merged = want;
  for (const HeldLock& h : own) {
    // Touching: overlapping, or adjacent (no byte between them). kLockToEnd + 1 cannot overflow.
    bool touches = h.start <= want.end + 1 && want.start <= h.end + 1;
    if (!touches) {
      out.push_back(h);
      continue;
    }
    if (want.type != LockType::kUnlock && h.type == want.type) {
      // Same type: one lock covers both. Locks of the other type that `h` touched lie outside
      // `h`, so widening `merged` over `h` never swallows them.
      merged.start = std::min(merged.start, h.start);
      merged.end = std::max(merged.end, h.end);
      continue;
    }
    if (!h.overlaps(want)) {
      out.push_back(h);  // merely adjacent, of another type: stays as it is
      continue;
    }
    // Another type (or an unlock) over part of `h`: keep what lies outside `want`.
    if (h.start < want.start) {
      HeldLock left = h;
      left.end = want.start - 1;
      out.push_back(left);
    }
    if (h.end > want.end) {
      HeldLock right = h;
      right.start = want.end + 1;
      out.push_back(right);
    }
  }
  if (want.type != LockType::kUnlock) out.push_back(merged);
  std::sort(out.begin(), out.end(),
            [](const HeldLock& a, const HeldLock& b) { return a.start < b.start; });
  return out;
}

}  // namespace tessera::meta
