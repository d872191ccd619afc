#include "fs/wire.h"

#include <kj/debug.h>

#include "fs/checksum.h"

namespace tessera {

void toWire(const Error& e, proto::Error::Builder b) {
  b.setCode(static_cast<proto::Errc>(e.code));
  b.setDetail(e.detail);
  if (!e.leaderHint.empty()) b.setLeaderHint(e.leaderHint);
}

void okToWire(proto::Error::Builder b) { b.setCode(proto::Errc::OK); }

Status fromWire(proto::Error::Reader r) {
  auto code = static_cast<uint16_t>(r.getCode());
  if (code == 0) return Status();
  if (code > static_cast<uint16_t>(Errc::kLost)) {
    return Error{Errc::kIo, "unknown error code " + std::to_string(code)};
  }
  return Error{static_cast<Errc>(code), std::string(r.getDetail().cStr()),
               std::string(r.getLeaderHint().cStr())};
}

void toWire(const Attr& a, proto::Attr::Builder b) {
  b.setInode(a.inode.value);
  b.setMode(a.mode);
  b.setNlink(a.nlink);
  b.setUid(a.uid);
  b.setGid(a.gid);
  b.setRdev(a.rdev);
  b.setSize(a.size);
  b.setBlocks(a.blocks);
  b.setAtimeNs(a.atimeNs);
  b.setMtimeNs(a.mtimeNs);
  b.setCtimeNs(a.ctimeNs);
  b.setReadOnly(a.readOnly);
}

Attr fromWire(proto::Attr::Reader r) {
  Attr a;
  a.inode = InodeId(r.getInode());
  a.mode = r.getMode();
  a.nlink = r.getNlink();
  a.uid = r.getUid();
  a.gid = r.getGid();
  a.rdev = r.getRdev();
  a.size = r.getSize();
  a.blocks = r.getBlocks();
  a.atimeNs = r.getAtimeNs();
  a.mtimeNs = r.getMtimeNs();
  a.ctimeNs = r.getCtimeNs();
  a.readOnly = r.getReadOnly();
  return a;
}

void toWire(const Layout& l, proto::Layout::Builder b) {
  b.setKind(l.kind == Layout::Kind::kEc ? proto::Layout::Kind::EC : proto::Layout::Kind::REPLICA);
  b.setK(l.k);
  b.setM(l.m);
}

Result<Layout> fromWire(proto::Layout::Reader r) {
  Layout l;
  switch (r.getKind()) {
    case proto::Layout::Kind::EC: l.kind = Layout::Kind::kEc; break;
    case proto::Layout::Kind::REPLICA: l.kind = Layout::Kind::kReplica; break;
    default: return Error{Errc::kInvalid, "unknown layout kind"};
  }
  l.k = r.getK();
  l.m = r.getM();
  if (!l.valid()) return Error{Errc::kInvalid, "layout out of bounds: " + l.toString()};
  return l;
}

void toWire(const ChunkDesc& c, proto::ChunkDesc::Builder b) {
  b.setIndex(c.index);
  b.setId(c.id.value);
  b.setVersion(c.version);
  toWire(c.layout, b.initLayout());
  auto servers = b.initServers(c.servers.size());
  for (size_t i = 0; i < c.servers.size(); ++i) servers.set(i, c.servers[i].value);
  b.setEpoch(c.epoch);
  b.setLeaseSession(c.leaseSession.value);
  b.setStaleShards(c.staleShards);
  b.setResync(c.resync);
  b.setShared(c.shared);
  b.setWritten(c.written);
}

Result<ChunkDesc> fromWire(proto::ChunkDesc::Reader r) {
  auto layout = fromWire(r.getLayout());
  if (!layout) return layout.error();
  ChunkDesc c;
  c.index = r.getIndex();
  c.id = ChunkId(r.getId());
  c.version = r.getVersion();
  c.layout = *layout;
  auto servers = r.getServers();
  if (servers.size() != size_t(c.layout.shards())) {
    return Error{Errc::kInvalid, "chunk descriptor lists " + std::to_string(servers.size()) +
                                     " servers for " + c.layout.toString()};
  }
  c.servers.reserve(servers.size());
  for (auto s : servers) c.servers.push_back(ServerId(s));
  c.epoch = r.getEpoch();
  c.leaseSession = SessionId(r.getLeaseSession());
  c.staleShards = r.getStaleShards();
  c.resync = r.getResync();
  c.shared = r.getShared();
  c.written = r.getWritten();
  if (c.staleShards >> c.layout.shards()) {
    return Error{Errc::kInvalid, "chunk descriptor marks shards stale that it does not have"};
  }
  return c;
}

void setBlockCrcs(capnp::List<uint32_t>::Builder out, kj::ArrayPtr<const kj::byte> data) {
  KJ_REQUIRE(out.size() * kBlockSize == data.size(), out.size(), data.size());
  for (size_t b = 0; b < out.size(); ++b) {
    out.set(b, crc32c(data.begin() + b * kBlockSize, kBlockSize));
  }
}

Status checkBlockCrcs(capnp::Data::Reader data, capnp::List<uint32_t>::Reader crcs,
                      const std::string& what) {
  if (data.size() % kBlockSize || crcs.size() != data.size() / kBlockSize) {
    return Error{Errc::kCorruption, what + ": " + std::to_string(crcs.size()) + " CRCs for " +
                                        std::to_string(data.size()) + " bytes"};
  }
  for (size_t b = 0; b < crcs.size(); ++b) {
    if (crc32c(data.begin() + b * kBlockSize, kBlockSize) != crcs[b]) {
      return Error{Errc::kCorruption, what + ": block " + std::to_string(b) + " failed its CRC"};
    }
  }
  return Status();
}

Result<std::vector<ChunkDesc>> fromWire(capnp::List<proto::ChunkDesc>::Reader list) {
  std::vector<ChunkDesc> out;
  out.reserve(list.size());
  for (auto c : list) {
    auto d = fromWire(c);
    if (!d) return d.error();
    out.push_back(kj::mv(*d));
  }
  return out;
}

}  // namespace tessera
