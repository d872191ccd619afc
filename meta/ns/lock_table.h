// meta/ns/lock_table.h — the rules of cluster-wide file locks, as pure functions over the locks
// one inode holds (the store and the ops around them: meta/ns/ops/locks.cc).
//
// Two spaces of locks per inode, as on Linux: fcntl record locks and OFD locks share one (they
// conflict with each other), flock locks have their own (whole file). A lock belongs to an
// owner: (session, owner id). The kernel names the owner — for fcntl locks the process's file
// table, for OFD and flock locks the open file description — so two open file descriptions on
// one host are two owners, and a session (a mount) is never one owner with another session.
//
// Conflict: two locks of different owners overlap and at least one is a write lock. Locks of
// one owner never conflict: a new lock replaces whatever the owner held in its range (an
// upgrade, a downgrade, an unlock of part of a range splits it), and adjacent or overlapping
// locks of the same type merge, as POSIX specifies for fcntl.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

namespace tessera::meta {

// The end of a lock that runs to the end of the file, whatever its size (l_len 0): the
// kernel's OFFSET_MAX.
constexpr uint64_t kLockToEnd = uint64_t(INT64_MAX);

enum class LockType : uint8_t { kUnlock = 0, kRead = 1, kWrite = 2 };

struct HeldLock {
  uint64_t session = 0, owner = 0;
  uint64_t handle = 0;  // the session's open handle it was taken through
  uint64_t start = 0, end = 0;  // inclusive; start <= end
  LockType type = LockType::kRead;
  uint32_t pid = 0;

  bool sameOwner(const HeldLock& o) const { return session == o.session && owner == o.owner; }
  bool overlaps(const HeldLock& o) const { return start <= o.end && o.start <= end; }
  bool operator==(const HeldLock&) const = default;
};

// True if the two locks cannot both be held.
bool conflicts(const HeldLock& a, const HeldLock& b);

// The first lock of `held` (in order) that conflicts with `want`; nullopt if `want` could be
// taken. `want.type` kUnlock never conflicts.
std::optional<HeldLock> findConflict(const std::vector<HeldLock>& held, const HeldLock& want);

// The locks `want`'s owner holds after setting `want` (kUnlock: dropping its range), given
// `own`: what that owner holds now (no two of them overlap). Sorted by start; no two overlap,
// and no two of one type touch.
std::vector<HeldLock> applyToOwn(const std::vector<HeldLock>& own, const HeldLock& want);

}  // namespace tessera::meta
