// Raft snapshots of the namespace (meta/ns/snapshot.h): a store read in pieces and written into
// a staging store beside another reproduces it exactly; a piece that does not check out is
// refused whole; an install cut short at any point leaves the old store or the whole new one.
#include <doctest/doctest.h>

#include <leveldb/env.h>

#include <string>
#include <vector>

#include "fs/checksum.h"
#include "meta/ns/snapshot.h"
#include "tests/meta/ns_fixture.h"

using namespace tessera;
using namespace tessera::test;

namespace {

leveldb::Env* envOf(NsFixture& f) { return f.env() ? f.env() : leveldb::Env::Default(); }

// The files of a directory (as the fixture's env sees it), without "." and "..".
std::vector<std::string> filesIn(NsFixture& f, const std::string& dir) {
  std::vector<std::string> names, out;
  if (!envOf(f)->GetChildren(dir, &names).ok()) return out;
  for (auto& n : names) {
    if (n != "." && n != "..") out.push_back(n);
  }
  return out;
}

// Moves every file of `from` to `to`, as a crash between two renames would leave them.
void moveStore(NsFixture& f, const std::string& from, const std::string& to) {
  leveldb::Env* env = envOf(f);
  (void)env->CreateDir(to);
  for (auto& name : filesIn(f, from)) REQUIRE(env->RenameFile(from + "/" + name, to + "/" + name).ok());
  (void)env->RemoveDir(from);
}

// `n` files in a few directories, then log index `applied` marked as applied.
void populate(NsFixture& f, int n, uint64_t applied) {
  std::vector<InodeId> dirs{kRootInode};
  for (int d = 0; d < 3; ++d) dirs.push_back(f.mkdirOk(kRootInode, "dir" + std::to_string(d)));
  for (int i = 0; i < n; ++i) f.createOk(dirs[i % dirs.size()], "file-" + std::to_string(i));
  REQUIRE(f.ns().markApplied(applied).ok());
}

struct Stream {
  std::vector<std::string> pieces;
  std::vector<uint64_t> offsets;
  uint64_t total = 0;
  uint64_t applied = 0;
};

Stream readStream(meta::SnapshotReader& reader, size_t pieceBytes) {
  Stream s;
  s.applied = reader.appliedIndex();
  while (!reader.done()) {
    s.offsets.push_back(reader.offset());
    auto piece = reader.next(pieceBytes);
    REQUIRE(piece.ok());
    s.pieces.push_back(std::move(*piece));
  }
  s.total = reader.offset();
  return s;
}

Stream readStream(meta::Namespace& ns, size_t pieceBytes) {
  meta::SnapshotReader reader(ns);
  return readStream(reader, pieceBytes);
}

uint32_t crcOf(const std::string& s) { return crc32c(s.data(), s.size()); }

// Writes the whole stream into a staging store beside `ns` and finishes it.
void stage(meta::Namespace& ns, const Stream& s) {
  auto writer = meta::SnapshotWriter::create(ns);
  REQUIRE(writer.ok());
  for (size_t i = 0; i < s.pieces.size(); ++i) {
    REQUIRE((*writer)->add(s.offsets[i], s.pieces[i], crcOf(s.pieces[i])).ok());
  }
  REQUIRE((*writer)->finish(s.total, s.applied).ok());
}

std::string record(std::string_view key, std::string_view value) {
  std::string r;
  for (uint32_t v : {uint32_t(key.size()), uint32_t(value.size())}) {
    for (int i = 0; i < 4; ++i) r.push_back(char((v >> (8 * i)) & 0xff));
  }
  r.append(key);
  r.append(value);
  return r;
}

}  // namespace

TEST_CASE("namespace snapshot: a store streamed in pieces and installed is reproduced exactly") {
  StoreKind kind = eachStoreKind();
  NsFixture src(kind), dst(kind);
  REQUIRE(src.init().ok());
  populate(src, 300, 500);
  REQUIRE(dst.init(Layout::ec(4, 2), "other-cluster").ok());
  populate(dst, 5, 10);

  Stream s = readStream(src.ns(), 1024);
  CHECK(s.pieces.size() > 10);
  CHECK(s.applied == 500);
  for (auto& p : s.pieces) CHECK(p.size() <= 1024);
  stage(dst.ns(), s);
  // Staged is not installed: the store is untouched until the switch.
  CHECK(dst.ns().appliedIndex() == 10);
  CHECK(dst.ns().clusterId() == "other-cluster");
  REQUIRE(dst.ns().installSnapshot().ok());
  CHECK(dst.ns().appliedIndex() == 500);
  CHECK(dst.ns().clusterId() == "test-cluster");
  CHECK(dst.lookupCode(kRootInode, "file-0") == Errc::kOk);
  CHECK(dst.dump() == src.dump());
  // Durable, and nothing of the staging is left to be installed twice.
  dst.reopen();
  CHECK(dst.dump() == src.dump());
  CHECK(dst.ns().installSnapshot().code() == Errc::kNotFound);
  CHECK(filesIn(dst, dst.path() + ".old").empty());
  CHECK(filesIn(dst, dst.path() + ".ready").empty());
}

TEST_CASE("namespace snapshot: the reader sees the store as of its start, not later writes") {
  StoreKind kind = eachStoreKind();
  NsFixture src(kind), dst(kind);
  REQUIRE(src.init().ok());
  populate(src, 50, 70);
  auto atStart = src.dump();  // (dump() reopens the store: before the reader exists)
  meta::SnapshotReader reader(src.ns());
  src.createOk(kRootInode, "later");
  REQUIRE(src.ns().markApplied(71).ok());
  // A piece in between the writes, as the leader streams while it applies.
  Stream s = readStream(reader, 4096);
  CHECK(s.applied == 70);
  REQUIRE(dst.init().ok());
  stage(dst.ns(), s);
  REQUIRE(dst.ns().installSnapshot().ok());
  CHECK(dst.dump() == atStart);
  CHECK(dst.lookupCode(kRootInode, "later") == Errc::kNotFound);
}

TEST_CASE("namespace snapshot: a piece that does not check out is refused and nothing of it is written") {
  StoreKind kind = eachStoreKind();
  NsFixture src(kind), dst(kind);
  REQUIRE(src.init().ok());
  populate(src, 100, 200);
  REQUIRE(dst.init(Layout::ec(4, 2), "dst").ok());
  populate(dst, 2, 3);
  Stream s = readStream(src.ns(), 512);
  REQUIRE(s.pieces.size() >= 3);
  auto w = meta::SnapshotWriter::create(dst.ns());
  REQUIRE(w.ok());
  meta::SnapshotWriter& writer = **w;
  const std::string& p0 = s.pieces[0];
  const std::string& p1 = s.pieces[1];

  // A flipped bit: the CRC catches it.
  std::string flipped = p0;
  flipped[flipped.size() / 2] ^= 0x10;
  CHECK(writer.add(0, flipped, crcOf(p0)).code() == Errc::kCorruption);
  // A record cut short, even with a matching CRC.
  std::string cut = p0.substr(0, p0.size() - 3);
  CHECK(writer.add(0, cut, crcOf(cut)).code() == Errc::kCorruption);
  // A header cut short.
  std::string stub = p0 + std::string(5, '\0');
  CHECK(writer.add(0, stub, crcOf(stub)).code() == Errc::kCorruption);
  // Keys must not be empty, and must rise.
  std::string emptyKey = record("", "v");
  CHECK(writer.add(0, emptyKey, crcOf(emptyKey)).code() == Errc::kCorruption);
  std::string backwards = record("b", "1") + record("a", "2");
  CHECK(writer.add(0, backwards, crcOf(backwards)).code() == Errc::kCorruption);
  std::string twice = record("a", "1") + record("a", "2");
  CHECK(writer.add(0, twice, crcOf(twice)).code() == Errc::kCorruption);
  CHECK(writer.received() == 0);
  CHECK(writer.records() == 0);

  REQUIRE(writer.add(0, p0, crcOf(p0)).ok());
  uint64_t afterFirst = writer.records();
  CHECK(afterFirst > 0);
  // Out of place: a repeated piece, a skipped piece, a piece past the end.
  CHECK(writer.add(0, p0, crcOf(p0)).code() == Errc::kInvalid);
  CHECK(writer.add(s.offsets[2], s.pieces[2], crcOf(s.pieces[2])).code() == Errc::kInvalid);
  CHECK(writer.add(s.total + 10, p1, crcOf(p1)).code() == Errc::kInvalid);
  // At the right offset, but with a key below the first piece's: keys rise across pieces too.
  std::string low = record("\x01", "x");
  CHECK(writer.add(p0.size(), low, crcOf(low)).code() == Errc::kCorruption);
  CHECK(writer.records() == afterFirst);
  CHECK(writer.received() == p0.size());
  // The stream goes on where it was.
  for (size_t i = 1; i < s.pieces.size(); ++i) {
    REQUIRE(writer.add(s.offsets[i], s.pieces[i], crcOf(s.pieces[i])).ok());
  }
  // The end must match: the total and the applied index the snapshot claims.
  CHECK(writer.finish(s.total + 1, s.applied).code() == Errc::kInvalid);
  CHECK(writer.finish(s.total, s.applied + 1).code() == Errc::kInvalid);
  CHECK(dst.ns().installSnapshot().code() == Errc::kNotFound);
  CHECK(dst.ns().appliedIndex() == 3);
  REQUIRE(writer.finish(s.total, s.applied).ok());
  CHECK(dst.ns().appliedIndex() == 3);  // staged, not installed
  REQUIRE(dst.ns().installSnapshot().ok());
  CHECK(dst.dump() == src.dump());
}

TEST_CASE("namespace snapshot: an install cut short leaves the old store or the whole new one") {
  StoreKind kind = eachStoreKind();
  NsFixture src(kind), dst(kind);
  REQUIRE(src.init().ok());
  populate(src, 60, 90);
  REQUIRE(dst.init(Layout::ec(4, 2), "old").ok());
  populate(dst, 3, 7);
  auto oldStore = dst.dump();
  auto newStore = src.dump();
  Stream s = readStream(src.ns(), 700);
  std::string path = dst.path();

  SUBCASE("stopped while pieces arrive: the old store, and the pieces are dropped") {
    {
      auto w = meta::SnapshotWriter::create(dst.ns());
      REQUIRE(w.ok());
      REQUIRE((*w)->add(0, s.pieces[0], crcOf(s.pieces[0])).ok());
    }
    CHECK(!filesIn(dst, path + ".install").empty());
    dst.reopen();
    CHECK(dst.dump() == oldStore);
    CHECK(filesIn(dst, path + ".install").empty());
    CHECK(dst.ns().appliedIndex() == 7);
  }
  SUBCASE("stopped after the last piece, before the switch: the new store") {
    stage(dst.ns(), s);
    dst.reopen();
    CHECK(dst.dump() == newStore);
    CHECK(dst.ns().appliedIndex() == 90);
  }
  SUBCASE("stopped between the two renames of the switch: the new store") {
    stage(dst.ns(), s);
    dst.withClosed([&] { moveStore(dst, path, path + ".old"); });
    CHECK(dst.dump() == newStore);
    CHECK(filesIn(dst, path + ".old").empty());
    CHECK(filesIn(dst, path + ".ready").empty());
  }
  SUBCASE("stopped before the old store was deleted: the new store, the old one goes") {
    stage(dst.ns(), s);
    dst.withClosed([&] {
      moveStore(dst, path, path + ".old");
      moveStore(dst, path + ".ready", path);
    });
    CHECK(dst.dump() == newStore);
    CHECK(filesIn(dst, path + ".old").empty());
  }
  SUBCASE("a staged snapshot not ahead of the store is dropped at open, not installed") {
    Stream older = readStream(dst.ns(), 700);  // the store itself, at the same index
    stage(dst.ns(), older);
    dst.reopen();
    CHECK(dst.dump() == oldStore);
    CHECK(filesIn(dst, path + ".ready").empty());
  }
  SUBCASE("a staged snapshot that is discarded is never installed") {
    stage(dst.ns(), s);
    dst.ns().discardSnapshot();
    dst.reopen();
    CHECK(dst.dump() == oldStore);
    CHECK(dst.ns().installSnapshot().code() == Errc::kNotFound);
  }
}
