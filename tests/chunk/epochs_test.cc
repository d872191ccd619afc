// EpochTable: fences survive a reopen; a torn or damaged tail is cut, never misread.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "chunk/epochs.h"
#include "tests/chunk/chunk_helpers.h"
#include "tests/support/temp_dir.h"

using namespace tessera;
using namespace tessera::chunk;

namespace {

kj::Own<EpochTable> openTable(const std::string& path) {
  auto t = EpochTable::open(path);
  REQUIRE(t.ok());
  return kj::mv(*t);
}

}  // namespace

TEST_CASE("epoch fences survive a reopen and never go back") {
  test::Loop loop;
  test::TempDir dir{"epochs-test"};
  std::string path = dir.path() + "/epochs";
  {
    auto t = openTable(path);
    CHECK(loop.wait(t->raise(ChunkId(1), 5)).ok());
    CHECK(loop.wait(t->raise(ChunkId(2), 1)).ok());  // epoch 1 is never written
    CHECK(loop.wait(t->raise(ChunkId(1), 3)).ok());  // lower: no change
    CHECK(loop.wait(t->admit(ChunkId(3), 7)).ok());
    CHECK(loop.wait(t->admit(ChunkId(1), 4)).code() == Errc::kStale);
    CHECK(t->get(ChunkId(1)) == 5);
  }
  CHECK(std::filesystem::file_size(path) == 2 * 24);
  auto t = openTable(path);
  CHECK(t->get(ChunkId(1)) == 5);
  CHECK(t->get(ChunkId(2)) == 0);
  CHECK(t->get(ChunkId(3)) == 7);
  CHECK(loop.wait(t->admit(ChunkId(3), 6)).code() == Errc::kStale);
}

TEST_CASE("raises made together share one write — a torn tail is cut at open") {
  test::Loop loop;
  test::TempDir dir{"epochs-test"};
  std::string path = dir.path() + "/epochs";
  {
    auto t = openTable(path);
    auto a = t->raise(ChunkId(10), 2);
    auto b = t->raise(ChunkId(11), 3);
    auto c = t->raise(ChunkId(12), 4);
    CHECK(loop.wait(kj::mv(a)).ok());
    CHECK(loop.wait(kj::mv(b)).ok());
    CHECK(loop.wait(kj::mv(c)).ok());
  }
  // A crash in the middle of the next record, then a damaged byte in the last whole one.
  {
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "0123456789", 10) == 10);
    ::close(fd);
    fd = ::open(path.c_str(), O_WRONLY);
    REQUIRE(::pwrite(fd, "\xff", 1, 2 * 24 + 8) == 1);
    ::close(fd);
  }
  auto t = openTable(path);
  CHECK(t->get(ChunkId(10)) == 2);
  CHECK(t->get(ChunkId(11)) == 3);
  CHECK(t->get(ChunkId(12)) == 0);  // its record was damaged: cut with the torn bytes
  CHECK(std::filesystem::file_size(path) == 2 * 24);
  CHECK(loop.wait(t->raise(ChunkId(12), 9)).ok());
  t = nullptr;
  CHECK(openTable(path)->get(ChunkId(12)) == 9);
}
