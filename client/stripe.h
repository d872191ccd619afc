// client/stripe.h — where the bytes of a chunk live on its shards. Pure arithmetic, no I/O.
//
// ec(k,m): the chunk is cut into stripes of k cells of 64 KiB; cell j of stripe s is bytes
// [s*cell, (s+1)*cell) of data shard j, and parity shard i holds at those offsets the parity of
// the k cells. A contiguous range of the chunk lands on each data shard as one contiguous range
// (the tail of a cell in its first stripe, whole cells, the head of a cell in its last stripe),
// and the shard offsets a range touches on the parity shards are the union of those.
// replica(n): every shard is a full copy; chunk offset = shard offset.
#pragma once
#include <cstdint>
#include <vector>

#include "fs/types.h"

namespace tessera::client {

struct Extent {
  uint64_t lo = 0;  // shard offsets [lo, hi)
  uint64_t hi = 0;
  bool empty() const { return hi <= lo; }
};

inline uint64_t alignDown(uint64_t v, uint64_t a) { return v / a * a; }
inline uint64_t alignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Bytes of the chunk per stripe: k cells for ec, one "cell" (the block) for replicas.
uint64_t stripeWidth(const Layout& layout);

// The shard offset holding chunk offset `off`, and which data shard (0 for replicas).
struct Place {
  int shard;
  uint64_t offset;
};
Place placeOf(const Layout& layout, uint64_t off);

// For chunk range [off, off+len): the exact (unaligned) shard range each of the k data shards
// holds. Entry j is empty when the range does not touch data shard j.
std::vector<Extent> dataExtents(const Layout& layout, uint64_t off, uint64_t len);

// The block-aligned shard range [lo, hi) every shard (data and parity) must be rewritten over
// when chunk range [off, off+len) is written: the union of the data extents, widened to 4 KiB
// blocks, and for ec widened to whole rows of every stripe touched.
Extent rowExtent(const Layout& layout, uint64_t off, uint64_t len);

// For chunk range [off, off+len): the block-aligned range each shard (k + m entries) must have
// disk space for so that every write inside the range finds room — what such writes can touch.
// ec: on data shard j its part of the range (dataExtents, widened to blocks; empty if none),
// on every parity shard the rows of the range (rowExtent). replicas: the range, widened to
// blocks, on every copy.
std::vector<Extent> shardExtents(const Layout& layout, uint64_t off, uint64_t len);

// How chunk range [off, off+len) is zeroed by a hole punch. The stripes it covers wholly (ec:
// rows of k cells, whose parity is zero too; replicas: 4 KiB blocks) are freed on every shard:
// `rows`, shard offsets, block-aligned. What lies before and after them (`head` and `tail`,
// chunk offsets; each shorter than a stripe, or the whole range when it covers no whole
// stripe, then in `head`) is written as zeros. Empty extents when there is nothing of a kind.
struct PunchPlan {
  Extent head;
  Extent rows;
  Extent tail;
};
PunchPlan punchPlan(const Layout& layout, uint64_t off, uint64_t len);

// Calls f(chunkOff, shard, shardOff, n) for each run of bytes of [off, off+len) that lies
// contiguously on one data shard, in chunk order.
template <typename F>
void forEachRun(const Layout& layout, uint64_t off, uint64_t len, F&& f) {
  uint64_t end = off + len;
  while (off < end) {
    Place p = placeOf(layout, off);
    uint64_t n = end - off;
    if (layout.isEc()) n = std::min(n, kCellSize - off % kCellSize);
    f(off, p.shard, p.offset, n);
    off += n;
  }
}

}  // namespace tessera::client
