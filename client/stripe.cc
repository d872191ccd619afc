#include "client/stripe.h"

#include <algorithm>

namespace tessera::client {

uint64_t stripeWidth(const Layout& layout) {
  return layout.isEc() ? kCellSize * layout.k : kBlockSize;
}

Place placeOf(const Layout& layout, uint64_t off) {
  if (!layout.isEc()) return Place{0, off};
  uint64_t width = kCellSize * layout.k;
  uint64_t stripe = off / width;
  uint64_t within = off % width;
  return Place{int(within / kCellSize), stripe * kCellSize + within % kCellSize};
}

std::vector<Extent> dataExtents(const Layout& layout, uint64_t off, uint64_t len) {
  std::vector<Extent> out(layout.k);
  forEachRun(layout, off, len, [&](uint64_t, int shard, uint64_t shardOff, uint64_t n) {
    Extent& e = out[shard];
    if (e.empty()) {
      e = Extent{shardOff, shardOff + n};
    } else {
      e.lo = std::min(e.lo, shardOff);
      e.hi = std::max(e.hi, shardOff + n);
    }
  });
  return out;
}

Extent rowExtent(const Layout& layout, uint64_t off, uint64_t len) {
  Extent u;
  bool any = false;
  for (const Extent& e : dataExtents(layout, off, len)) {
    if (e.empty()) continue;
    u = any ? Extent{std::min(u.lo, e.lo), std::max(u.hi, e.hi)} : e;
    any = true;
  }
  if (!any) return Extent{};
  return Extent{alignDown(u.lo, kBlockSize), alignUp(u.hi, kBlockSize)};
}

std::vector<Extent> shardExtents(const Layout& layout, uint64_t off, uint64_t len) {
  std::vector<Extent> out(layout.shards());
  Extent rows = rowExtent(layout, off, len);
  if (!layout.isEc()) {
    for (Extent& e : out) e = rows;
    return out;
  }
  std::vector<Extent> data = dataExtents(layout, off, len);
  for (int j = 0; j < layout.k; ++j) {
    if (!data[j].empty()) {
      out[j] = Extent{alignDown(data[j].lo, kBlockSize), alignUp(data[j].hi, kBlockSize)};
    }
  }
  for (int j = layout.k; j < layout.shards(); ++j) out[j] = rows;
  return out;
}

PunchPlan punchPlan(const Layout& layout, uint64_t off, uint64_t len) {
  uint64_t end = off + len;
  uint64_t width = stripeWidth(layout);
  uint64_t lo = alignUp(off, width), hi = alignDown(end, width);
  if (len == 0) return PunchPlan{};
  if (lo >= hi) return PunchPlan{Extent{off, end}, Extent{}, Extent{}};
  // Stripe s is shard range [s * cell, (s + 1) * cell) on every shard (a block for replicas).
  uint64_t perShard = layout.isEc() ? kCellSize : kBlockSize;
  return PunchPlan{Extent{off, lo}, Extent{lo / width * perShard, hi / width * perShard},
                   Extent{hi, end}};
}

}  // namespace tessera::client
