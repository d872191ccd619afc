#include "tests/meta/ns_fixture.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include "fs/wire.h"

namespace tessera::test {

StoreKind eachStoreKind() {
  StoreKind kind = StoreKind::kMemory;
  SUBCASE("in memory") { kind = StoreKind::kMemory; }
  SUBCASE("on disk") { kind = StoreKind::kDisk; }
  return kind;
}

std::unique_ptr<NsFixture> eachStore() {
  auto f = std::make_unique<NsFixture>(eachStoreKind());
  REQUIRE(f->init().ok());
  return f;
}

NsFixture::NsFixture(StoreKind kind) : kind_(kind) {
  if (kind == StoreKind::kMemory) {
    env_.reset(leveldb::NewMemEnv(leveldb::Env::Default()));
    path_ = "/ns";
  } else {
    dir_.emplace("tessera-ns");
    path_ = *dir_ / "ns";
  }
  open();
}

NsFixture::~NsFixture() { close(); }

void NsFixture::open() {
  auto opened = meta::Namespace::open(path_, env_.get());
  REQUIRE_MESSAGE(opened.ok(), (opened.ok() ? "" : opened.error().toString()));
  ns_ = std::move(*opened);
}

void NsFixture::close() { ns_.reset(); }

void NsFixture::withClosed(const std::function<void()>& fn) {
  close();
  fn();
  open();
}

void NsFixture::reopen() {
  close();
  open();
}

void NsFixture::withRawDb(const std::function<void(leveldb::DB&)>& fn) {
  close();
  {
    leveldb::Options options;
    if (env_) options.env = env_.get();
    leveldb::DB* db = nullptr;
    leveldb::Status s = leveldb::DB::Open(options, path_, &db);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    std::unique_ptr<leveldb::DB> owned(db);
    fn(*owned);
  }
  open();
}

std::vector<std::pair<std::string, std::string>> NsFixture::dump() {
  std::vector<std::pair<std::string, std::string>> all;
  withRawDb([&](leveldb::DB& db) {
    std::unique_ptr<leveldb::Iterator> it(db.NewIterator(leveldb::ReadOptions()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      all.emplace_back(it->key().ToString(), it->value().ToString());
    }
    REQUIRE(it->status().ok());
  });
  return all;
}

Result<meta::Applied> NsFixture::apply(const std::function<void(proto::Op::Builder)>& fill) {
  capnp::MallocMessageBuilder message(64);
  auto op = message.initRoot<proto::Op>();
  op.setNowNs(++clock);
  fill(op);
  return ns_->apply(op.asReader());
}

Result<meta::Applied> NsFixture::applyBytes(const std::string& flat) {
  auto words = kj::heapArray<capnp::word>(flat.size() / sizeof(capnp::word));
  memcpy(words.begin(), flat.data(), flat.size());
  capnp::FlatArrayMessageReader reader(words);
  return ns_->apply(reader.getRoot<proto::Op>());
}

namespace {

Result<Attr> attrOf(const Result<meta::Applied>& r) {
  if (!r) return r.error();
  return r->attr;
}

Status statusOf(const Result<meta::Applied>& r) {
  if (!r) return r.error();
  return Status();
}

}  // namespace

Status NsFixture::init(Layout rootPolicy, std::string clusterId) {
  return statusOf(apply([&](proto::Op::Builder op) {
    auto init = op.initInit();
    init.setClusterId(clusterId);
    toWire(rootPolicy, init.initRootPolicy());
  }));
}

Result<Attr> NsFixture::mknod(InodeId parent, std::string_view name, uint32_t mode,
                              uint64_t session, std::string_view target, uint32_t rdev) {
  uint64_t id = nextInode++;
  return attrOf(apply([&](proto::Op::Builder op) {
    auto m = op.initMknod();
    m.setParent(parent.value);
    m.setName(kj::heapString(name.data(), name.size()));
    m.setMode(mode);
    m.setRdev(rdev);
    m.setUid(1000);
    m.setGid(100);
    m.setTarget(kj::heapString(target.data(), target.size()));
    m.setNewInode(id);
    m.setSession(session);
  }));
}

Result<Attr> NsFixture::link(InodeId inode, InodeId newParent, std::string_view newName) {
  return attrOf(apply([&](proto::Op::Builder op) {
    auto l = op.initLink();
    l.setInode(inode.value);
    l.setNewParent(newParent.value);
    l.setNewName(kj::heapString(newName.data(), newName.size()));
  }));
}

Status NsFixture::unlink(InodeId parent, std::string_view name) {
  return statusOf(apply([&](proto::Op::Builder op) {
    auto u = op.initUnlink();
    u.setParent(parent.value);
    u.setName(kj::heapString(name.data(), name.size()));
  }));
}

Status NsFixture::rmdir(InodeId parent, std::string_view name) {
  return statusOf(apply([&](proto::Op::Builder op) {
    auto u = op.initUnlink();
    u.setParent(parent.value);
    u.setName(kj::heapString(name.data(), name.size()));
    u.setDir(true);
  }));
}

Status NsFixture::rename(InodeId parent, std::string_view name, InodeId newParent,
                         std::string_view newName, uint32_t flags) {
  return statusOf(apply([&](proto::Op::Builder op) {
    auto r = op.initRename();
    r.setParent(parent.value);
    r.setName(kj::heapString(name.data(), name.size()));
    r.setNewParent(newParent.value);
    r.setNewName(kj::heapString(newName.data(), newName.size()));
    r.setFlags(flags);
  }));
}

Result<Attr> NsFixture::setattr(InodeId inode, const SetAttr& set) {
  return attrOf(apply([&](proto::Op::Builder op) {
    auto s = op.initSetattr();
    s.setInode(inode.value);
    s.setValid(set.valid);
    s.setMode(set.mode);
    s.setUid(set.uid);
    s.setGid(set.gid);
    s.setSize(set.size);
    s.setAtimeNs(set.atimeNs);
    s.setMtimeNs(set.mtimeNs);
  }));
}

Status NsFixture::setxattr(InodeId inode, std::string_view name, std::string_view value,
                           uint32_t flags) {
  return statusOf(apply([&](proto::Op::Builder op) {
    auto x = op.initSetxattr();
    x.setInode(inode.value);
    x.setName(kj::heapString(name.data(), name.size()));
    x.setValue(kj::arrayPtr(reinterpret_cast<const kj::byte*>(value.data()), value.size()));
    x.setFlags(flags);
  }));
}

Status NsFixture::removexattr(InodeId inode, std::string_view name) {
  return statusOf(apply([&](proto::Op::Builder op) {
    auto x = op.initRemovexattr();
    x.setInode(inode.value);
    x.setName(kj::heapString(name.data(), name.size()));
  }));
}

Result<Attr> NsFixture::open(uint64_t session, InodeId inode) {
  return attrOf(apply([&](proto::Op::Builder op) {
    auto o = op.initOpen();
    o.setSession(session);
    o.setInode(inode.value);
  }));
}

Status NsFixture::release(uint64_t session, InodeId inode) {
  return statusOf(apply([&](proto::Op::Builder op) {
    auto o = op.initRelease();
    o.setSession(session);
    o.setInode(inode.value);
  }));
}

Result<ChunkDesc> NsFixture::allocChunk(InodeId inode, uint64_t index, uint64_t chunkId,
                                        Layout layout,
                                        std::optional<std::vector<uint64_t>> servers) {
  ChunkDesc chunk;
  chunk.index = index;
  chunk.id = ChunkId(chunkId);
  chunk.version = 1;
  chunk.layout = layout;
  if (servers) {
    for (uint64_t s : *servers) chunk.servers.push_back(ServerId(s));
  } else {
    for (int i = 1; i <= layout.shards(); ++i) chunk.servers.push_back(ServerId(i));
  }
  auto r = apply([&](proto::Op::Builder op) {
    auto a = op.initAllocChunk();
    a.setInode(inode.value);
    toWire(chunk, a.initChunk());
  });
  if (!r) return r.error();
  REQUIRE(r->chunk.has_value());
  return *r->chunk;
}

Result<Attr> NsFixture::commitWrite(InodeId inode, uint64_t size, int64_t mtimeNs,
                                     const std::vector<Usage>& usage) {
  return attrOf(apply([&](proto::Op::Builder op) {
    auto c = op.initCommitWrite();
    c.setInode(inode.value);
    c.setSize(size);
    c.setMtimeNs(mtimeNs);
    auto chunks = c.initUsageChunks(usage.size());
    auto set = c.initUsageSet(usage.size());
    auto clear = c.initUsageClear(usage.size());
    for (size_t i = 0; i < usage.size(); ++i) {
      chunks.set(i, usage[i].index);
      set.set(i, usage[i].set);
      clear.set(i, usage[i].clear);
    }
  }));
}

Status NsFixture::openSession(uint64_t session, std::string_view host,
                              std::string_view mountpoint) {
  return statusOf(apply([&](proto::Op::Builder op) {
    auto s = op.initOpenSession();
    s.setSession(session);
    s.setHost(kj::heapString(host.data(), host.size()));
    s.setMountpoint(kj::heapString(mountpoint.data(), mountpoint.size()));
  }));
}

Status NsFixture::registerServer(uint64_t id, std::string_view address, std::string_view site,
                                 std::string_view rack, std::string_view host) {
  return statusOf(apply([&](proto::Op::Builder op) {
    auto s = op.initRegisterServer().initServer();
    s.setId(id);
    s.setAddress(kj::heapString(address.data(), address.size()));
    s.setSite(kj::heapString(site.data(), site.size()));
    s.setRack(kj::heapString(rack.data(), rack.size()));
    s.setHost(kj::heapString(host.data(), host.size()));
  }));
}

Result<meta::Applied> NsFixture::registerServerWithToken(uint64_t id, std::string_view address,
                                                         std::string_view token, bool newId) {
  return apply([&](proto::Op::Builder op) {
    auto reg = op.initRegisterServer();
    reg.setNewId(newId);
    auto s = reg.initServer();
    s.setId(id);
    s.setAddress(kj::heapString(address.data(), address.size()));
    s.setSite("s1");
    s.setRack("r1");
    s.setHost("h1");
    s.setToken(kj::heapString(token.data(), token.size()));
  });
}

Status NsFixture::removed(uint64_t server, const std::vector<uint64_t>& chunks) {
  return statusOf(apply([&](proto::Op::Builder op) {
    auto r = op.initRemoved();
    r.setServer(server);
    auto list = r.initChunks(chunks.size());
    for (size_t i = 0; i < chunks.size(); ++i) list.set(i, chunks[i]);
  }));
}

InodeId NsFixture::mkdirOk(InodeId parent, std::string_view name) {
  auto r = mkdir(parent, name);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().toString()));
  return r->inode;
}

InodeId NsFixture::createOk(InodeId parent, std::string_view name, uint64_t session) {
  auto r = create(parent, name, session);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().toString()));
  return r->inode;
}

Attr NsFixture::attr(InodeId inode) {
  auto r = ns_->getattr(inode);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().toString()));
  return *r;
}

Errc NsFixture::lookupCode(InodeId parent, std::string_view name) {
  return ns_->lookup(parent, name).code();
}

std::vector<std::string> NsFixture::names(InodeId dir, uint32_t page) {
  std::vector<std::string> out;
  uint64_t cookie = 0;
  while (true) {
    auto r = ns_->readdir(dir, cookie, page, false);
    REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().toString()));
    for (auto& e : r->entries) {
      if (e.name != "." && e.name != "..") out.push_back(e.name);
      cookie = e.cookie;
    }
    if (r->eof) break;
  }
  return out;
}

}  // namespace tessera::test
