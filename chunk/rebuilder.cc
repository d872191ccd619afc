#include "chunk/rebuilder.h"

#include <algorithm>
#include <cstring>

#include "fs/checksum.h"
#include "fs/log.h"
#include "fs/lost_block.h"
#include "fs/wire.h"

namespace tessera::chunk {

Result<std::vector<int>> pickSources(const Layout& layout, int target,
                                     const std::vector<bool>& usable) {
  size_t want = layout.isEc() ? layout.k : 1;
  std::vector<int> out;
  for (int i = 0; i < layout.shards() && out.size() < want; ++i) {
    if (i != target && i < int(usable.size()) && usable[i]) out.push_back(i);
  }
  if (out.size() < want) {
    return Error{Errc::kUnavailable, "rebuilding shard " + std::to_string(target) + " of " +
                                         layout.toString() + " needs " + std::to_string(want) +
                                         " readable shards, " + std::to_string(out.size()) +
                                         " are"};
  }
  return out;
}

Status decodePiece(const Layout& layout, int target, const std::vector<int>& read,
                   const std::vector<kj::ArrayPtr<const kj::byte>>& inputs,
                   kj::ArrayPtr<kj::byte> out, ErasureCode* code, std::vector<uint64_t>* torn) {
  size_t n = out.size();
  for (int i : read) {
    KJ_REQUIRE(i >= 0 && size_t(i) < inputs.size() && inputs[i].size() == n, i);
  }
  if (!layout.isEc()) {
    if (read.empty()) return Error{Errc::kUnavailable, "no replica to copy"};
    memcpy(out.begin(), inputs[read[0]].begin(), n);
    return Status();
  }
  KJ_REQUIRE(code != nullptr && code->k() == layout.k && code->m() == layout.m);
  // Every shard not read is "missing" to ISA-L; only the target's output is kept, the others
  // go to scratch space.
  std::vector<uint8_t*> shards(layout.shards());
  std::vector<int> missing;
  std::vector<kj::Array<kj::byte>> scratch;
  for (int i = 0; i < layout.shards(); ++i) {
    if (std::find(read.begin(), read.end(), i) != read.end()) {
      // reconstruct() writes only the missing shards' buffers.
      shards[i] = const_cast<uint8_t*>(inputs[i].begin());
    } else if (i == target) {
      shards[i] = out.begin();
      missing.push_back(i);
    } else {
      scratch.push_back(kj::heapArray<kj::byte>(n));
      shards[i] = scratch.back().begin();
      missing.push_back(i);
    }
  }
  if (auto s = code->reconstruct(shards.data(), missing, n); !s) return s;
  if (torn && int(read.size()) > layout.k) {
    std::vector<const uint8_t*> check(shards.begin(), shards.end());
    for (int i = layout.k; i < layout.shards(); ++i) {
      if (std::find(read.begin(), read.end(), i) == read.end()) check[i] = nullptr;
    }
    *torn = rowsDisagreeingWithParity(*code, check, n);
  }
  if (torn && target < layout.k) {
    // A data block that decodes to the lost pattern was marked lost, and parity was encoded
    // over it since (fs/lost_block.h): it stays lost, whatever the spare parity says.
    for (size_t b = 0; b < n / kBlockSize; ++b) {
      if (isLostBlock(out.begin() + b * kBlockSize)) torn->push_back(b);
    }
    std::sort(torn->begin(), torn->end());
    torn->erase(std::unique(torn->begin(), torn->end()), torn->end());
  }
  return Status();
}

uint64_t maxShardBytes(const Layout& layout) {
  return shardCapacity(layout);
}

struct Rebuilder::Job {
  ShardKey key;
  Layout layout;
  std::vector<std::string> sources;
  uint64_t length = 0;
  std::vector<bool> usable;
  std::unique_ptr<ErasureCode> code;
  uint64_t written = 0;

  // Every shard but the target with a parsable address is usable.
  static kj::Own<Job> make(ShardKey key, Layout layout, std::vector<std::string> sources) {
    auto job = kj::heap<Job>();
    job->key = key;
    job->layout = layout;
    job->usable.resize(layout.shards());
    for (int i = 0; i < layout.shards(); ++i) {
      job->usable[i] = i != key.shard && !sources[i].empty() && Address::parse(sources[i]).ok();
    }
    job->sources = std::move(sources);
    if (layout.isEc()) job->code = std::make_unique<ErasureCode>(layout.k, layout.m);
    return job;
  }
};

Rebuilder::Rebuilder(DiskSet& disk, ChunkPeers& peers, kj::Timer& timer, Config config)
    : disk_(disk), peers_(peers), timer_(timer), config_(config), next_(timer.now()) {
  KJ_REQUIRE(config_.rateBytesPerSec > 0 && config_.maxJobs > 0 && config_.pieceBytes > 0 &&
             config_.pieceBytes % kBlockSize == 0);
}

kj::Promise<Result<uint64_t>> Rebuilder::rebuild(ShardKey key, Layout layout,
                                                 std::vector<std::string> sources,
                                                 uint64_t length) {
  using R = Result<uint64_t>;
  if (!key.chunk) return R(Error{Errc::kInvalid, "rebuild of chunk 0"});
  if (!layout.valid() || key.shard >= layout.shards()) {
    return R(Error{Errc::kInvalid, "rebuild of shard " + key.toString() + " of " +
                                       layout.toString()});
  }
  if (sources.size() != size_t(layout.shards())) {
    return R(Error{Errc::kInvalid, std::to_string(sources.size()) + " sources for " +
                                       layout.toString()});
  }
  if (length % kBlockSize != 0 || length > maxShardBytes(layout)) {
    return R(Error{Errc::kInvalid, "rebuild length " + std::to_string(length)});
  }
  auto id = std::make_pair(key.chunk.value, int(key.shard));
  if (active_.count(id)) {
    return R(Error{Errc::kBusy, "shard " + key.toString() + " is being rebuilt already"});
  }
  if (active_.size() >= config_.maxJobs) {
    return R(Error{Errc::kBusy, std::to_string(active_.size()) + " rebuilds running"});
  }
  auto job = Job::make(key, layout, std::move(sources));
  job->length = length;
  if (auto picked = pickSources(layout, key.shard, job->usable); !picked) {
    return R(picked.error());
  }
  active_.insert(id);
  lost_.erase(id);  // of an earlier attempt that ended without settling
  ++stats_.running;
  Job& j = *job;
  auto chunks = kj::heapArray<ChunkId>({key.chunk});
  return disk_.remove(kj::mv(chunks))
      .then([this, &j](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        return disk_.create(j.key, j.layout);
      })
      .then([this, &j](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        return runPieces(j, 0);
      })
      .then([this, &j](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        return disk_.sync(kj::heapArray<ShardKey>({j.key}));
      })
      .then([this, &j, id](Status s) -> R {
        active_.erase(id);
        --stats_.running;
        if (!s) {
          ++stats_.failed;
          log::warn("rebuilding shard ", j.key.toString().c_str(), ": ",
                    s.error().toString().c_str());
          return s.error();
        }
        ++stats_.done;
        log::info("rebuilt shard ", j.key.toString().c_str(), " (", j.length, " bytes, ",
                  j.written, " written)");
        return j.length;
      },
      [this, id](kj::Exception&& e) -> R {
        active_.erase(id);
        --stats_.running;
        ++stats_.failed;
        return errorFromException(e, "rebuild");
      })
      .attach(kj::mv(job));
}

kj::Promise<Status> Rebuilder::runPieces(Job& job, uint64_t offset) {
  if (offset >= job.length) return Status();
  uint64_t n = std::min(config_.pieceBytes, job.length - offset);
  return throttle(n)
      .then([this, &job, offset, n] { return piece(job, offset, n); })
      .then([this, &job, offset, n](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        stats_.bytes += n;
        return runPieces(job, offset + n);
      });
}

kj::Promise<void> Rebuilder::throttle(uint64_t bytes) {
  auto now = timer_.now();
  if (next_ < now) next_ = now;
  kj::TimePoint start = next_;
  next_ += int64_t((unsigned __int128)bytes * 1'000'000'000 / config_.rateBytesPerSec) *
           kj::NANOSECONDS;
  if (start <= now) return kj::READY_NOW;
  return timer_.atTime(start);
}

kj::Promise<Status> Rebuilder::piece(Job& job, uint64_t offset, uint64_t n) {
  auto picked = pickSources(job.layout, job.key.shard, job.usable);
  if (!picked) return Status(picked.error());
  std::vector<int> read = *picked;
  // One more source for a data shard, to check its decode with (see the header).
  if (job.layout.isEc() && job.key.shard < job.layout.k) {
    for (int i = 0; i < job.layout.shards(); ++i) {
      if (job.usable[i] && std::find(read.begin(), read.end(), i) == read.end()) {
        read.push_back(i);
        break;
      }
    }
  }
  auto reads = kj::heapArrayBuilder<kj::Promise<Result<kj::Array<kj::byte>>>>(read.size());
  for (int i : read) reads.add(readFrom(job, i, offset, n));
  return kj::joinPromises(reads.finish())
      .then([this, &job, offset, n, read](
                kj::Array<Result<kj::Array<kj::byte>>> got) -> kj::Promise<Status> {
        bool retry = false;
        for (size_t i = 0; i < read.size(); ++i) {
          if (got[i]) continue;
          log::warn("rebuilding shard ", job.key.toString().c_str(), ": source shard ", read[i],
                    " at ", job.sources[read[i]].c_str(), ": ", got[i].error().toString().c_str(),
                    "; trying another");
          job.usable[read[i]] = false;
          retry = true;
        }
        if (retry) return piece(job, offset, n);
        std::vector<kj::ArrayPtr<const kj::byte>> inputs(job.layout.shards());
        for (size_t i = 0; i < read.size(); ++i) inputs[read[i]] = got[i]->asPtr();
        auto out = kj::heapArray<kj::byte>(n);
        std::vector<uint64_t> torn;
        if (auto s = decodePiece(job.layout, job.key.shard, read, inputs, out, job.code.get(),
                                 &torn);
            !s) {
          return s;
        }
        size_t blocks = n / kBlockSize;
        auto crcs = kj::heapArray<uint32_t>(blocks);
        bool zero = true;
        uint32_t zeroCrc = zeroBlockCrc();
        for (size_t b = 0; b < blocks; ++b) {
          crcs[b] = crc32c(out.begin() + b * kBlockSize, kBlockSize);
          if (crcs[b] != zeroCrc) {
            zero = false;
          } else {
            // A CRC match is not proof; only real zeros may be left as a hole.
            auto block = out.slice(b * kBlockSize, (b + 1) * kBlockSize);
            if (std::any_of(block.begin(), block.end(), [](kj::byte c) { return c != 0; })) {
              zero = false;
            }
          }
        }
        if (zero && torn.empty()) return Status();
        job.written += n;
        auto data = out.asPtr();
        return disk_.write(job.key, job.layout, offset, data, kj::mv(crcs), false,
                           NewShard::kCreate)
            .attach(kj::mv(out))
            .then([this, &job, offset, torn = kj::mv(torn)](Status s) mutable
                      -> kj::Promise<Status> {
              if (!s || torn.empty()) return s;
              log::warn("rebuilding shard ", job.key.toString().c_str(), ": ", torn.size(),
                        " blocks from offset ", offset + torn[0] * kBlockSize,
                        " decode from rows whose parity disagrees with their data (a write was "
                        "interrupted there) or to a lost block: marked lost, not stored as data");
              auto& lost = lost_[{job.key.chunk.value, int(job.key.shard)}];
              for (uint64_t b : torn) lost.insert(offset + b * kBlockSize);
              auto blocks = kj::heap<std::vector<uint64_t>>(kj::mv(torn));
              auto& b = *blocks;
              return markLost(job, offset, b, 0).attach(kj::mv(blocks));
            });
      });
}

kj::Promise<Status> Rebuilder::markLost(Job& job, uint64_t offset,
                                        const std::vector<uint64_t>& blocks, size_t next) {
  if (next == blocks.size()) return Status();
  // One call per run of neighbouring blocks.
  size_t end = next + 1;
  while (end < blocks.size() && blocks[end] == blocks[end - 1] + 1) ++end;
  return disk_.markLost(job.key, offset + blocks[next] * kBlockSize, (end - next) * kBlockSize)
      .then([this, &job, offset, &blocks, end](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        return markLost(job, offset, blocks, end);
      });
}

void Rebuilder::coveredByLog(ShardKey key, const std::set<uint64_t>& offsets) {
  auto it = lost_.find({key.chunk.value, int(key.shard)});
  if (it == lost_.end()) return;
  for (uint64_t at : offsets) it->second.erase(at);
}

uint64_t Rebuilder::settleLost(ShardKey key, bool succeeded) {
  auto it = lost_.find({key.chunk.value, int(key.shard)});
  if (it == lost_.end()) return 0;
  uint64_t n = it->second.size();
  lost_.erase(it);
  if (!succeeded || n == 0) return 0;
  stats_.lostBlocks += n;
  log::warn("rebuilt shard ", key.toString().c_str(), ": ", n,
            " blocks stay marked lost; reads of them fail until they are written again");
  if (onLostBlocks) onLostBlocks(key, n);
  return n;
}

kj::Promise<Status> Rebuilder::redecodeLoggedRows(ShardKey key, Layout layout,
                                                  std::vector<std::string> sources,
                                                  std::vector<LoggedRow> rows) {
  if (!layout.isEc() || key.shard >= layout.k || rows.empty()) return Status();
  if (sources.size() != size_t(layout.shards())) {
    return Status(Error{Errc::kInvalid, std::to_string(sources.size()) + " sources"});
  }
  auto job = Job::make(key, layout, std::move(sources));
  auto owned = kj::heap<std::vector<LoggedRow>>(std::move(rows));
  Job& j = *job;
  auto& r = *owned;
  log::info("rebuilt shard ", key.toString().c_str(), ": decoding ", r.size(),
            " blocks of rows with unapplied write-log records again, by agreement of the parity");
  return redecodeRow(j, r, 0)
      .then([this, &j](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        return disk_.sync(kj::heapArray<ShardKey>({j.key}));
      })
      .attach(kj::mv(job), kj::mv(owned));
}

kj::Promise<Status> Rebuilder::redecodeRow(Job& job, const std::vector<LoggedRow>& rows,
                                           size_t next) {
  if (next == rows.size()) return Status();
  const LoggedRow& row = rows[next];
  std::vector<int> asked;
  auto reads = kj::heapArrayBuilder<kj::Promise<Result<kj::Array<kj::byte>>>>(
      size_t(job.layout.shards()));
  for (int i = 0; i < job.layout.shards(); ++i) {
    if (!job.usable[i]) continue;
    asked.push_back(i);
    reads.add(readFrom(job, i, row.offset, kBlockSize));
  }
  return kj::joinPromises(reads.finish())
      .then([this, &job, &rows, next, asked](
                kj::Array<Result<kj::Array<kj::byte>>> got) -> kj::Promise<Status> {
        const LoggedRow& row = rows[next];
        std::vector<const uint8_t*> stored(job.layout.shards(), nullptr);
        for (size_t i = 0; i < asked.size(); ++i) {
          if (got[i]) stored[asked[i]] = got[i]->begin();
        }
        auto block = kj::heapArray<kj::byte>(kBlockSize);
        if (auto ok = agreeOnLostBlock(*job.code, job.key.shard, stored, row.records,
                                       block.begin());
            !ok) {
          return Status(Error{Errc::kUnavailable,
                              "shard " + job.key.toString() + " offset " +
                                  std::to_string(row.offset) + ": " + ok.error().detail});
        }
        auto crcs = kj::heapArray<uint32_t>({crc32c(block.begin(), kBlockSize)});
        auto data = block.asPtr();
        return disk_.write(job.key, job.layout, row.offset, data, kj::mv(crcs), false,
                           NewShard::kRefuse)
            .attach(kj::mv(block), kj::mv(got))
            .then([this, &job, &rows, next](Status s) -> kj::Promise<Status> {
              if (!s) return s;
              // Decoded by agreement: no longer lost, if the rebuild had marked it so.
              auto it = lost_.find({job.key.chunk.value, int(job.key.shard)});
              if (it != lost_.end()) it->second.erase(rows[next].offset);
              return redecodeRow(job, rows, next + 1);
            });
      });
}

kj::Promise<Result<kj::Array<kj::byte>>> Rebuilder::readFrom(Job& job, int shard, uint64_t offset,
                                                            uint64_t n) {
  using R = Result<kj::Array<kj::byte>>;
  std::string address = job.sources[shard];
  uint64_t chunk = job.key.chunk.value;
  return peers_.get(address).then([this, address, chunk, shard, offset,
                                   n](Result<proto::ChunkService::Client> c) -> kj::Promise<R> {
    if (!c) return R(c.error());
    auto req = c->readRequest();
    req.setRaw(true);  // the stored bytes, which the other shards agree with
    req.setChunk(chunk);
    req.setShard(uint8_t(shard));
    req.setOffset(offset);
    req.setLength(uint32_t(n));
    using Response = capnp::Response<proto::ChunkService::ReadResults>;
    return withTimeout(timer_, config_.callTimeoutMs, kj::Promise<Response>(req.send()))
        .then(
            [offset, n](Response r) -> R {
              if (auto s = fromWire(r.getError()); !s) return s.error();
              auto data = r.getData();
              if (data.size() != n) {
                return Error{Errc::kIo, "read returned " + std::to_string(data.size()) +
                                            " bytes of " + std::to_string(n)};
              }
              auto wire = r.getCrcs();
              auto crcs = kj::heapArray<uint32_t>(wire.size());
              for (size_t i = 0; i < crcs.size(); ++i) crcs[i] = wire[i];
              if (auto s = verifyBlocks(offset, data, crcs); !s) return s.error();
              return kj::heapArray<kj::byte>(data);
            },
            [this, address](kj::Exception&& e) -> R {
              peers_.failed(address);
              return errorFromException(e, "read");
            });
  });
}

}  // namespace tessera::chunk
