// The Raft write-ahead log on disk: what survives a reopen, and what a crash mid-write leaves.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "meta/raft/file_storage.h"
#include "tests/support/temp_dir.h"

using namespace tessera;
using namespace tessera::meta::raft;
namespace stdfs = std::filesystem;

namespace {

ConfState three() { return ConfState{{NodeId(1), NodeId(2), NodeId(3)}}; }

Entry entry(uint64_t term, uint64_t index, std::string data) {
  Entry e;
  e.term = Term(term);
  e.index = LogIndex(index);
  e.data = std::move(data);
  return e;
}

// Writes, syncs and commits one batch, as the node does for a Ready.
void persist(FileStorage& s, const FileStorage::Batch& b) {
  REQUIRE(s.write(b).ok());
  REQUIRE(s.sync().ok());
  REQUIRE(s.commit(b).ok());
}

std::vector<Entry> all(const FileStorage& s) {
  if (s.lastIndex() == s.snapshot().index) return {};
  auto r = s.entries(s.snapshot().index.next(), s.lastIndex().next(), UINT64_MAX);
  REQUIRE(r.ok());
  return *r;
}

std::vector<stdfs::path> segments(const std::string& dir) {
  std::vector<stdfs::path> out;
  for (auto& e : stdfs::directory_iterator(dir)) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("raft log: entries and the hard state survive a reopen") {
  test::TempDir tmp;
  std::string dir = tmp / "wal";
  {
    auto s = FileStorage::open(dir, three());
    REQUIRE(s.ok());
    CHECK((*s)->lastIndex() == LogIndex(0));
    FileStorage::Batch b;
    b.entries = {entry(1, 1, "a"), entry(1, 2, "bb"), entry(2, 3, "ccc")};
    b.hardState = HardState{Term(2), NodeId(3), LogIndex(2)};
    persist(**s, b);
  }
  auto s = FileStorage::open(dir, three());
  REQUIRE(s.ok());
  CHECK((*s)->tornBytes() == 0);
  CHECK((*s)->hardState() == HardState{Term(2), NodeId(3), LogIndex(2)});
  auto got = all(**s);
  REQUIRE(got.size() == 3);
  CHECK(got[2] == entry(2, 3, "ccc"));
  CHECK((*s)->snapshot().conf == three());
}

TEST_CASE("raft log: an overwritten suffix replays as overwritten") {
  test::TempDir tmp;
  std::string dir = tmp / "wal";
  {
    auto s = FileStorage::open(dir, three());
    REQUIRE(s.ok());
    FileStorage::Batch a;
    a.entries = {entry(1, 1, "a"), entry(1, 2, "b"), entry(1, 3, "c")};
    persist(**s, a);
    FileStorage::Batch b;  // a new leader replaces entries from index 2 on
    b.entries = {entry(2, 2, "B")};
    persist(**s, b);
  }
  auto s = FileStorage::open(dir, three());
  REQUIRE(s.ok());
  auto got = all(**s);
  REQUIRE(got.size() == 2);
  CHECK(got[1] == entry(2, 2, "B"));
}

TEST_CASE("raft log: a tail cut or garbled mid-write is detected and dropped, never replayed") {
  for (int damage = 0; damage < 3; ++damage) {
    CAPTURE(damage);
    test::TempDir tmp;
    std::string dir = tmp / "wal";
    {
      auto s = FileStorage::open(dir, three());
      REQUIRE(s.ok());
      FileStorage::Batch a;
      a.entries = {entry(1, 1, "first"), entry(1, 2, "second")};
      a.hardState = HardState{Term(1), NodeId(1), LogIndex(2)};
      persist(**s, a);
      FileStorage::Batch b;
      b.entries = {entry(1, 3, std::string(1000, 'x'))};
      persist(**s, b);
    }
    auto path = segments(dir).back();
    auto size = stdfs::file_size(path);
    if (damage == 0) {
      stdfs::resize_file(path, size - 7);  // the last record cut short
    } else {
      std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(std::streamoff(size - (damage == 1 ? 3 : 990)));  // garble its data
      f.put('\x5a');
    }
    auto s = FileStorage::open(dir, three());
    REQUIRE(s.ok());
    CHECK((*s)->tornBytes() > 0);
    CHECK((*s)->lastIndex() == LogIndex(2));
    CHECK((*s)->hardState().commit == LogIndex(2));
    // The cut file takes new writes and they survive.
    FileStorage::Batch c;
    c.entries = {entry(2, 3, "again")};
    persist(**s, c);
    s = FileStorage::open(dir, three());
    REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.error().toString()));
    CHECK((*s)->tornBytes() == 0);
    REQUIRE((*s)->lastIndex() == LogIndex(3));
    CHECK(all(**s)[2] == entry(2, 3, "again"));
  }
}

TEST_CASE("raft log: damage in an older segment is refused, not silently cut") {
  test::TempDir tmp;
  std::string dir = tmp / "wal";
  {
    auto s = FileStorage::open(dir, three(), /*segmentBytes=*/256);
    REQUIRE(s.ok());
    for (uint64_t i = 1; i <= 20; ++i) {
      FileStorage::Batch b;
      b.entries = {entry(1, i, std::string(100, char('a' + i % 26)))};
      persist(**s, b);
    }
    CHECK((*s)->segmentCount() > 3);
  }
  auto first = segments(dir).front();
  std::fstream f(first, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(std::streamoff(stdfs::file_size(first) - 10));
  f.put('\x01');
  f.close();
  auto s = FileStorage::open(dir, three(), 256);
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().code == Errc::kCorruption);
}

TEST_CASE("raft log: compaction drops covered segments and a reopen starts at the snapshot") {
  test::TempDir tmp;
  std::string dir = tmp / "wal";
  size_t before = 0;
  {
    auto s = FileStorage::open(dir, three(), 256);
    REQUIRE(s.ok());
    for (uint64_t i = 1; i <= 30; ++i) {
      FileStorage::Batch b;
      b.entries = {entry(1, i, std::string(100, 'z'))};
      b.hardState = HardState{Term(1), NodeId(1), LogIndex(i)};
      persist(**s, b);
    }
    before = segments(dir).size();
    FileStorage::Batch compact;
    compact.snapshot = SnapshotMeta{LogIndex(25), Term(1), three()};
    persist(**s, compact);
    FileStorage::Batch more;
    more.entries = {entry(1, 31, "after")};
    persist(**s, more);
  }
  CHECK(segments(dir).size() < before);
  auto s = FileStorage::open(dir, three(), 256);
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.error().toString()));
  CHECK((*s)->snapshot().index == LogIndex(25));
  CHECK((*s)->lastIndex() == LogIndex(31));
  CHECK((*s)->hardState().commit == LogIndex(30));
  auto got = all(**s);
  REQUIRE(got.size() == 6);
  CHECK(got.front().index == LogIndex(26));
  CHECK(got.back() == entry(1, 31, "after"));
}

TEST_CASE("raft log: a snapshot installed from the leader replaces the whole log") {
  test::TempDir tmp;
  std::string dir = tmp / "wal";
  {
    auto s = FileStorage::open(dir, three());
    REQUIRE(s.ok());
    FileStorage::Batch a;
    a.entries = {entry(1, 1, "old"), entry(1, 2, "stale")};
    persist(**s, a);
    FileStorage::Batch install;
    install.snapshot = SnapshotMeta{LogIndex(100), Term(5), three()};
    install.installSnapshot = true;
    install.hardState = HardState{Term(5), NodeId(), LogIndex(100)};
    persist(**s, install);
  }
  auto s = FileStorage::open(dir, three());
  REQUIRE(s.ok());
  CHECK((*s)->snapshot().index == LogIndex(100));
  CHECK((*s)->lastIndex() == LogIndex(100));
  CHECK((*s)->hardState().commit == LogIndex(100));
}

TEST_CASE("raft log: entries of an old leader before an installed snapshot never come back") {
  test::TempDir tmp;
  std::string dir = tmp / "wal";
  {
    auto s = FileStorage::open(dir, three(), 300);
    REQUIRE(s.ok());
    for (uint64_t i = 1; i <= 12; ++i) {  // an old leader's entries, spread over segments
      FileStorage::Batch b;
      b.entries = {entry(1, i, std::string(90, 'o'))};
      persist(**s, b);
    }
    FileStorage::Batch install;
    install.snapshot = SnapshotMeta{LogIndex(8), Term(3), three()};
    install.installSnapshot = true;
    install.hardState = HardState{Term(3), NodeId(), LogIndex(8)};
    persist(**s, install);
    for (uint64_t i = 9; i <= 20; ++i) {
      FileStorage::Batch b;
      b.entries = {entry(3, i, std::string(90, 'n'))};
      persist(**s, b);
    }
    FileStorage::Batch compact;
    compact.snapshot = SnapshotMeta{LogIndex(15), Term(3), three()};
    persist(**s, compact);
  }
  auto s = FileStorage::open(dir, three(), 300);
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.error().toString()));
  CHECK((*s)->snapshot().index == LogIndex(15));
  auto got = all(**s);
  REQUIRE(got.size() == 5);
  for (auto& e : got) CHECK(e.term == Term(3));
}

TEST_CASE("raft log: rotating after a compaction deletes the segments it covers at once") {
  test::TempDir tmp;
  std::string dir = tmp / "wal";
  auto compactTo = [](FileStorage& s, uint64_t index) {
    FileStorage::Batch compact;
    compact.snapshot = SnapshotMeta{LogIndex(index), Term(1), three()};
    REQUIRE(s.write(compact).ok());
    REQUIRE(s.sync().ok());
    REQUIRE(s.rotate().ok());
    REQUIRE(s.commit(compact).ok());
  };
  {
    // Segments far larger than the log: without rotate() one segment would hold it all.
    auto s = FileStorage::open(dir, three());
    REQUIRE(s.ok());
    for (uint64_t i = 1; i <= 20; ++i) {
      FileStorage::Batch b;
      b.entries = {entry(1, i, "x")};
      b.hardState = HardState{Term(1), NodeId(1), LogIndex(i)};
      persist(**s, b);
    }
    auto first = segments(dir);
    REQUIRE(first.size() == 1);
    // Entries 13..20 stay: so does the segment holding them.
    compactTo(**s, 12);
    CHECK(segments(dir).size() == 2);
    CHECK(segments(dir).front() == first.front());
    FileStorage::Batch more;
    more.entries = {entry(1, 21, "y")};
    more.hardState = HardState{Term(1), NodeId(1), LogIndex(21)};
    persist(**s, more);
    compactTo(**s, 21);
    auto now = segments(dir);
    CHECK(now.size() == 1);
    CHECK(std::find(now.begin(), now.end(), first.front()) == now.end());
  }
  auto s = FileStorage::open(dir, three());
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.error().toString()));
  CHECK((*s)->snapshot().index == LogIndex(21));
  CHECK((*s)->lastIndex() == LogIndex(21));
  CHECK((*s)->hardState().commit == LogIndex(21));
}
