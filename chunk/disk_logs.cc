#include "chunk/disk_logs.h"

#include <kj/vector.h>

#include <algorithm>

namespace tessera::chunk {
namespace {

// Every promise's outcome; the first error, if any.
kj::Promise<Status> allOf(kj::Vector<kj::Promise<Status>> all) {
  return kj::joinPromises(all.releaseAsArray()).then([](kj::Array<Status> done) {
    for (auto& s : done) {
      if (!s) return s;
    }
    return Status();
  });
}

}  // namespace

Result<kj::Own<DiskLogs>> DiskLogs::open(DiskSet& disks, ChunkLog::Config config) {
  std::vector<PerDisk> perDisk;
  for (size_t i = 0; i < disks.size(); ++i) {
    if (!disks.diskAt(i)) continue;  // failed: its chunks are lost here, records and fences too
    auto log = ChunkLog::open(disks.dirAt(i) + "/log", config);
    if (!log) return log.error();
    auto epochs = EpochTable::open(disks.dirAt(i) + "/epochs");
    if (!epochs) return epochs.error();
    perDisk.push_back(PerDisk{i, kj::mv(*log), kj::mv(*epochs)});
  }
  if (perDisk.empty()) return Error{Errc::kIo, "no disk to keep write logs on: " + disks.dirs()};
  return kj::heap<DiskLogs>(disks, std::move(perDisk));
}

DiskLogs::DiskLogs(DiskSet& disks, std::vector<PerDisk> perDisk)
    : disks_(disks), perDisk_(std::move(perDisk)) {}

uint64_t DiskLogs::epoch(ChunkId chunk) const {
  uint64_t newest = 0;
  for (auto& d : perDisk_) newest = std::max(newest, d.epochs->get(chunk));
  return newest;
}

kj::Promise<Status> DiskLogs::admit(ChunkId chunk, uint64_t epoch) {
  uint64_t newest = this->epoch(chunk);
  if (epoch < newest) return Status(EpochTable::fenced(chunk, newest, epoch));
  if (epoch == newest) return Status();
  return raise(chunk, epoch);
}

kj::Promise<Status> DiskLogs::raise(ChunkId chunk, uint64_t epoch) {
  if (epoch <= this->epoch(chunk)) return Status();
  auto at = home(chunk);
  // No disk takes new shards and none holds one of this chunk: any table will do, as every
  // table is read.
  PerDisk* d = at ? *at : &perDisk_.front();
  return d->epochs->raise(chunk, epoch);
}

kj::Promise<Status> DiskLogs::append(ChunkLog::Record record) {
  auto at = home(record.chunk);
  if (!at) return Status(at.error());
  return (*at)->log->append(kj::mv(record));
}

kj::Promise<Status> DiskLogs::trim(ChunkId chunk, uint64_t epoch, uint64_t seq) {
  kj::Vector<kj::Promise<Status>> trims;
  for (auto& d : perDisk_) {
    if (d.log->count(chunk) > 0) trims.add(d.log->trim(chunk, epoch, seq));
  }
  return allOf(kj::mv(trims));
}

kj::Promise<Status> DiskLogs::drop(ChunkId chunk) {
  kj::Vector<kj::Promise<Status>> drops;
  for (auto& d : perDisk_) {
    if (d.log->count(chunk) > 0) drops.add(d.log->drop(chunk));
  }
  return allOf(kj::mv(drops));
}

void DiskLogs::overlay(ChunkId chunk, uint8_t shard, uint64_t offset, kj::ArrayPtr<kj::byte> out,
                       kj::ArrayPtr<uint32_t> crcs) const {
  if (auto* d = holding(chunk)) d->log->overlay(chunk, shard, offset, out, crcs);
}

std::vector<const ChunkLog::Record*> DiskLogs::records(ChunkId chunk, int shard, uint64_t lo,
                                                       uint64_t hi) const {
  if (auto* d = holding(chunk)) return d->log->records(chunk, shard, lo, hi);
  return {};
}

size_t DiskLogs::count(ChunkId chunk) const {
  auto* d = holding(chunk);
  return d ? d->log->count(chunk) : 0;
}

ChunkLog::Stats DiskLogs::stats() const {
  ChunkLog::Stats sum;
  for (auto& d : perDisk_) {
    auto s = d.log->stats();
    sum.records += s.records;
    sum.bytes += s.bytes;
    sum.segments += s.segments;
    sum.appended += s.appended;
    sum.trimmed += s.trimmed;
    sum.reused += s.reused;
  }
  return sum;
}

DiskLogs::PerDisk* DiskLogs::holding(ChunkId chunk) {
  for (auto& d : perDisk_) {
    if (d.log->count(chunk) > 0) return &d;
  }
  return nullptr;
}

const DiskLogs::PerDisk* DiskLogs::holding(ChunkId chunk) const {
  for (auto& d : perDisk_) {
    if (d.log->count(chunk) > 0) return &d;
  }
  return nullptr;
}

Result<DiskLogs::PerDisk*> DiskLogs::home(ChunkId chunk) {
  if (auto* d = holding(chunk)) return d;
  auto disk = disks_.homeOf(chunk);
  if (!disk) return disk.error();
  for (auto& d : perDisk_) {
    if (d.disk == *disk) return &d;
  }
  return Error{Errc::kIo, "chunk " + std::to_string(chunk.value) + " belongs on disk " +
                              disks_.dirAt(*disk) + ", which failed: its write log is not open"};
}

}  // namespace tessera::chunk
