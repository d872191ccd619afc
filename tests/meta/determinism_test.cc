// The namespace is a replicated state machine: the same ops in the same order must give the
// same bytes on every replica. Random op sequences check that, and the store's invariants.
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <bit>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <tuple>

#include "fs/wire.h"
#include "meta/ns/keys.h"
#include "meta/ns/records.h"
#include "tests/meta/ns_fixture.h"

using namespace tessera;
using namespace tessera::test;

namespace {

uint64_t pickSeed() {
  if (const char* s = getenv("TESSERA_SEED"); s && *s) return std::strtoull(s, nullptr, 0);
  return std::random_device()() * uint64_t(0x100000001) ^ std::random_device()();
}

// Builds random ops that are mostly meaningful: it learns which inodes exist and which are
// directories from what store A answered, so most ops hit real entries and some hit errors.
class OpGenerator {
 public:
  explicit OpGenerator(uint64_t seed) : rng_(seed) {}

  std::string next(int64_t now) {
    capnp::MallocMessageBuilder message;
    auto op = message.initRoot<proto::Op>();
    op.setNowNs(now);
    fill(op);
    auto words = capnp::messageToFlatArray(message);
    auto bytes = words.asBytes();
    return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
  }

  // What store A answered to the last op, so later ops can use new inodes.
  void learn(const Result<meta::Applied>& r) {
    if (r && pendingInode_) {
      inodes_.push_back(*pendingInode_);
      if (pendingDir_) dirs_.push_back(*pendingInode_);
    }
    pendingInode_.reset();
  }

 private:
  uint64_t below(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }
  bool chance(int percent) { return below(100) < uint64_t(percent); }
  template <typename T>
  T pick(const std::vector<T>& v) {
    return v[below(v.size())];
  }
  std::string name() {
    static const char* const kNames[] = {"a", "b", "c",      "d", "e", "f",
                                         "g", "h", "vm.img", "x", "y", "z"};
    return kNames[below(12)];
  }
  uint64_t dir() { return chance(95) ? pick(dirs_) : below(nextInode_ + 2); }
  uint64_t inode() { return chance(95) ? pick(inodes_) : below(nextInode_ + 2); }

  void fill(proto::Op::Builder op) {
    uint64_t roll = below(108);
    if (roll >= 100) {
      fillClone(op, roll);
    } else if (roll < 22) {
      auto m = op.initMknod();
      m.setParent(dir());
      m.setName(name());
      static const uint32_t kTypes[] = {S_IFREG, S_IFREG, S_IFREG, S_IFDIR,
                                        S_IFDIR, S_IFLNK, S_IFIFO, 0};
      uint32_t type = kTypes[below(8)];
      m.setMode(type | uint32_t(below(01000)));
      m.setUid(uint32_t(below(3)));
      if (type == S_IFLNK) m.setTarget("t" + std::to_string(below(100)));
      m.setNewInode(nextInode_);
      if (chance(20)) m.setSession(1 + below(3));
      pendingInode_ = nextInode_++;
      pendingDir_ = type == S_IFDIR;
    } else if (roll < 27) {
      auto l = op.initLink();
      l.setInode(inode());
      l.setNewParent(dir());
      l.setNewName(name());
    } else if (roll < 42) {
      auto u = op.initUnlink();
      u.setParent(dir());
      u.setName(name());
      u.setDir(chance(30));
    } else if (roll < 57) {
      auto r = op.initRename();
      r.setParent(dir());
      r.setName(name());
      r.setNewParent(dir());
      r.setNewName(name());
      r.setFlags(chance(80) ? 0 : uint32_t(1 + below(3)));
    } else if (roll < 64) {
      auto s = op.initSetattr();
      s.setInode(inode());
      s.setValid(uint32_t(below(512)));
      s.setMode(uint32_t(below(07777)));
      s.setSize(below(4) * kChunkSize + below(3) * 100);
      s.setMtimeNs(int64_t(below(1000)));
    } else if (roll < 69) {
      auto x = op.initSetxattr();
      x.setInode(inode());
      bool policy = chance(15);
      x.setName(policy ? "tessera.policy" : "user." + name());
      std::string value = policy ? (chance(50) ? "replica(2)" : "ec(2,1)") : name();
      x.setValue(kj::arrayPtr(reinterpret_cast<const kj::byte*>(value.data()), value.size()));
      x.setFlags(uint32_t(below(3)));
    } else if (roll < 72) {
      auto x = op.initRemovexattr();
      x.setInode(inode());
      x.setName("user." + name());
    } else if (roll < 79) {
      auto o = op.initOpen();
      o.setSession(1 + below(3));
      o.setInode(inode());
    } else if (roll < 86) {
      auto o = op.initRelease();
      o.setSession(1 + below(3));
      o.setInode(inode());
    } else if (roll < 93) {
      auto a = op.initAllocChunk();
      a.setInode(inode());
      ChunkDesc c;
      c.index = below(5);
      c.id = ChunkId(nextChunk_++);
      c.layout = chance(50) ? Layout::ec(2, 1) : Layout::replica(2);
      for (int i = 0; i < c.layout.shards(); ++i) c.servers.push_back(ServerId(1 + below(4)));
      toWire(c, a.initChunk());
    } else if (roll < 96) {
      auto c = op.initCommitWrite();
      c.setInode(inode());
      c.setSize(below(5) * kChunkSize);
      c.setMtimeNs(int64_t(below(1000)));
      // MiBs written and punched in a few chunks (most of which exist).
      unsigned n = unsigned(below(3));
      auto chunks = c.initUsageChunks(n);
      auto set = c.initUsageSet(n);
      auto clear = c.initUsageClear(n);
      for (unsigned i = 0; i < n; ++i) {
        chunks.set(i, below(5));
        set.set(i, rng_() & rng_());
        clear.set(i, rng_() & rng_());
      }
    } else if (roll < 98) {
      auto r = op.initRemoved();
      r.setServer(1 + below(4));
      auto chunks = r.initChunks(3);
      for (unsigned i = 0; i < 3; ++i) chunks.set(i, 1 + below(nextChunk_));
    } else if (roll < 99) {
      if (chance(50)) {
        auto s = op.initOpenSession();
        s.setSession(1 + below(5));
        s.setHost("h");
        s.setMountpoint("/m");
      } else {
        // Releases every open of the session (if it has a record), deleting orphans.
        auto e = op.initExpireSession();
        e.setSession(1 + below(5));
      }
    } else {
      auto s = op.initRegisterServer().initServer();
      s.setId(1 + below(4));
      s.setAddress("10.0.0." + std::to_string(below(4)) + ":7000");
    }
  }

  // Clones between files (meta/ns/ops/clone.cc), and copies of shared chunks: a chunk id picked
  // from those handed out, so some of them name the chunk that is there.
  void fillClone(proto::Op::Builder op, uint64_t roll) {
    if (roll < 105) {
      auto c = op.initCloneChunks();
      c.setSrc(inode());
      c.setDst(inode());
      c.setSrcFirst(below(5));
      c.setDstFirst(below(5));
      c.setCount(1 + below(4));
      c.setSize(below(6) * kChunkSize);
      c.setExactSize(chance(30));
      c.setSession(below(3));
      return;
    }
    auto c = op.initCowChunk();
    c.setInode(inode());
    c.setIndex(below(5));
    c.setOld(1 + below(nextChunk_));
    ChunkDesc copy;
    copy.id = ChunkId(nextChunk_++);
    copy.layout = chance(50) ? Layout::ec(2, 1) : Layout::replica(2);
    for (int i = 0; i < copy.layout.shards(); ++i) copy.servers.push_back(ServerId(1 + below(4)));
    toWire(copy, c.initChunk());
  }

  std::mt19937_64 rng_;
  std::vector<uint64_t> dirs_{1};
  std::vector<uint64_t> inodes_{1};
  uint64_t nextInode_ = 2;
  uint64_t nextChunk_ = 1;
  std::optional<uint64_t> pendingInode_;
  bool pendingDir_ = false;
};

// Checks what every store must satisfy after any sequence of ops, from its raw records.
void checkInvariants(const std::vector<std::pair<std::string, std::string>>& all) {
  using namespace meta;
  std::map<uint64_t, Inode> inodes;
  std::map<uint64_t, uint32_t> subdirs;  // directory → entries that are directories
  std::map<uint64_t, uint32_t> names;    // inode → entries naming it
  std::map<uint64_t, uint64_t> holder;   // directory → the directory whose entry names it
  std::set<uint64_t> open;
  std::map<uint64_t, uint64_t> openRecords, xattrRecords;  // inode → 'o' / 'x' records
  std::map<uint64_t, uint64_t> chunks;  // inode → chunk records
  std::map<uint64_t, uint64_t> writtenMiB;  // inode → MiBs its chunk records say are written
  // Chunk id → the (inode, index) records naming it, and the shared flag of each.
  std::map<uint64_t, std::vector<std::pair<std::pair<uint64_t, uint64_t>, bool>>> named;
  std::set<std::tuple<uint64_t, uint64_t, uint64_t>> refs;  // 'R' records
  std::set<uint64_t> garbage;
  size_t garbageRecords = 0;
  uint64_t garbageCount = 0;
  size_t dentries = 0, readdirs = 0, chunkRecords = 0;
  uint64_t inodeCount = 0, chunkCount = 0;
  for (auto& [key, value] : all) {
    uint64_t id = key.size() >= 9 ? keys::readU64(key, 1) : 0;
    switch (key[0]) {
      case keys::kInode: {
        auto inode = decodeInode(InodeId(id), value);
        REQUIRE(inode.ok());
        inodes[id] = *inode;
        break;
      }
      case keys::kDentry: {
        auto d = decodeDentry(value);
        REQUIRE(d.ok());
        ++dentries;
        ++names[d->inode.value];
        if (d->type == S_IFDIR) {
          ++subdirs[id];
          holder[d->inode.value] = id;
        }
        break;
      }
      case keys::kReaddir:
        ++readdirs;
        break;
      case keys::kOpen:
        open.insert(id);
        ++openRecords[id];
        break;
      case keys::kXattr:
        ++xattrRecords[id];
        break;
      case keys::kGarbage:
        ++garbageRecords;
        garbage.insert(id);
        break;
      case keys::kChunk: {
        ++chunkRecords;
        ++chunks[id];
        uint64_t index = keys::readU64(key, 9);
        auto c = decodeChunk(index, value);
        REQUIRE(c.ok());
        writtenMiB[id] += uint64_t(std::popcount(c->written));
        named[c->id.value].push_back({{id, index}, c->shared});
        break;
      }
      case keys::kRef:
        REQUIRE(key.size() == keys::kRefKeyLen);
        refs.insert({id, keys::readU64(key, 9), keys::readU64(key, 17)});
        break;
      case keys::kCounter:
        if (key[1] == keys::kInodeCount) inodeCount = keys::readU64(value);
        if (key[1] == keys::kChunkCount) chunkCount = keys::readU64(value);
        if (key[1] == keys::kGarbageCount) garbageCount = keys::readU64(value);
        break;
      default:
        break;
    }
  }
  CHECK(dentries == readdirs);
  CHECK(inodeCount == inodes.size());
  CHECK(chunkCount == chunkRecords);
  CHECK(garbageCount == garbageRecords);
  // A chunk named by two records or more is shared in each, with a reference for each; one
  // named once is private, without one; no reference is left over; nothing named is garbage.
  size_t refsExpected = 0;
  for (auto& [chunk, records] : named) {
    CAPTURE(chunk);
    CHECK(garbage.count(chunk) == 0);
    for (auto& [where, shared] : records) {
      CHECK(shared == (records.size() > 1));
      if (records.size() > 1) CHECK(refs.count({chunk, where.first, where.second}) == 1);
    }
    if (records.size() > 1) refsExpected += records.size();
  }
  CHECK(refs.size() == refsExpected);
  MESSAGE(refs.size() << " references to shared chunks (clones)");
  for (auto& [id, inode] : inodes) {
    CAPTURE(id);
    if (inode.isReg()) CHECK(inode.writtenMiB == writtenMiB[id]);
    CHECK(inode.openSessions == openRecords[id]);
    CHECK(inode.xattrCount == xattrRecords[id]);
    if (inode.isDir()) {
      uint32_t expected = id == 1 || names[id] > 0 ? 2 + subdirs[id] : 0;
      CHECK(inode.attr.nlink == expected);
      CHECK((id == 1 || names[id] <= 1));
      if (id != 1 && names[id] == 1) CHECK(inode.parent.value == holder[id]);
    } else {
      CHECK(inode.attr.nlink == names[id]);
      CHECK(inode.chunkCount == chunks[id]);
    }
    // Only an open inode may have lost its last name.
    if (id != 1 && names[id] == 0) CHECK(open.count(id) == 1);
  }
}

}  // namespace

TEST_CASE(
    "determinism: the same random ops give byte-identical stores, which keep their invariants") {
  StoreKind kind = eachStoreKind();
  uint64_t seed = pickSeed();
  CAPTURE(seed);
  MESSAGE("seed " << seed << " (TESSERA_SEED=" << seed << " replays it)");
  NsFixture a(kind), b(kind);
  REQUIRE(a.init().ok());
  REQUIRE(b.init().ok());

  OpGenerator gen(seed);
  std::vector<std::string> ops;
  std::vector<Errc> codes;
  std::map<Errc, int> histogram;
  for (int i = 0; i < 2000; ++i) {
    ops.push_back(gen.next(++a.clock));
    auto r = a.applyBytes(ops.back());
    gen.learn(r);
    codes.push_back(r.code());
    ++histogram[r.code()];
  }
  for (size_t i = 0; i < ops.size(); ++i) {
    auto r = b.applyBytes(ops[i]);
    CAPTURE(i);
    REQUIRE(r.code() == codes[i]);
  }
  // The generator should mostly produce ops that succeed, or the test checks little.
  CHECK(histogram[Errc::kOk] > 600);

  auto dumpA = a.dump();
  auto dumpB = b.dump();
  CHECK(dumpA.size() == dumpB.size());
  CHECK(dumpA == dumpB);
  checkInvariants(dumpA);
  CHECK(a.ns().idMarks().inode == b.ns().idMarks().inode);
}
