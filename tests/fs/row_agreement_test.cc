#include "fs/row_agreement.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <string>

#include "fs/types.h"

using namespace tessera;

namespace {

// One ec(4,2) row of 4 KiB blocks and three log records (shards 0, 2, 0) over it. A half
// applied row is described by the world (records applied) each block holds.
struct Row {
  static constexpr int k = 4, m = 2, n = 6;
  ErasureCode code{k, m};
  std::vector<std::string> base;     // the row before any record, parity encoded
  std::vector<std::string> records;  // the records' blocks
  std::vector<int> shards{0, 2, 0};  // ... and their shards

  explicit Row(uint64_t seed) {
    std::mt19937_64 rng(seed);
    auto random = [&rng] {
      std::string b(kBlockSize, '\0');
      for (auto& c : b) c = char(rng());
      return b;
    };
    for (int j = 0; j < k; ++j) base.push_back(random());
    for (size_t i = 0; i < shards.size(); ++i) records.push_back(random());
    base.resize(n);
    for (int j = k; j < n; ++j) base[j] = std::string(kBlockSize, '\0');
    base = world(0);
  }
  // Every block of the row in world w: data blocks after the first w records, parity encoded.
  std::vector<std::string> world(size_t w) {
    std::vector<std::string> row = base;
    for (size_t i = 0; i < w; ++i) row[shards[i]] = records[i];
    std::vector<const uint8_t*> in;
    std::vector<uint8_t*> out;
    for (int j = 0; j < k; ++j) in.push_back(reinterpret_cast<const uint8_t*>(row[j].data()));
    for (int j = k; j < n; ++j) out.push_back(reinterpret_cast<uint8_t*>(row[j].data()));
    code.encode(in.data(), out.data(), kBlockSize);
    return row;
  }
  std::vector<RowRecord> rowRecords() {
    std::vector<RowRecord> r;
    for (size_t i = 0; i < shards.size(); ++i) {
      r.push_back(RowRecord{shards[i], reinterpret_cast<const uint8_t*>(records[i].data())});
    }
    return r;
  }
};

const uint8_t* bytesOf(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

}  // namespace

TEST_CASE("row agreement: every half-applied state where data never runs ahead of parity decodes the lost block") {
  Row row(7);
  int states = 0;
  for (int lost : {1, 3}) {
    // Parity blocks in worlds p4, p5; data shards 0 and 2 in worlds no newer than both.
    for (size_t p4 = 0; p4 <= 3; ++p4) {
      for (size_t p5 = 0; p5 <= 3; ++p5) {
        for (size_t d0 = 0; d0 <= std::min(p4, p5); ++d0) {
          for (size_t d2 = 0; d2 <= std::min(p4, p5); ++d2) {
            CAPTURE(lost);
            CAPTURE(p4);
            CAPTURE(p5);
            CAPTURE(d0);
            CAPTURE(d2);
            std::vector<std::vector<std::string>> worlds;
            for (size_t w = 0; w <= 3; ++w) worlds.push_back(row.world(w));
            std::vector<std::string> stored = worlds[0];
            stored[0] = worlds[d0][0];
            stored[2] = worlds[d2][2];
            stored[4] = worlds[p4][4];
            stored[5] = worlds[p5][5];
            std::vector<const uint8_t*> ptrs;
            for (auto& b : stored) ptrs.push_back(bytesOf(b));
            ptrs[lost] = nullptr;
            std::string out(kBlockSize, '\0');
            auto ok = agreeOnLostBlock(row.code, lost, ptrs, row.rowRecords(),
                                       reinterpret_cast<uint8_t*>(out.data()));
            REQUIRE(ok);
            CHECK((out == row.base[lost]));
            ++states;
          }
        }
      }
    }
  }
  MESSAGE(states << " half-applied states");
}

TEST_CASE("row agreement: the plain decode of such a row is garbage (why the agreement exists)") {
  Row row(8);
  auto oldRow = row.world(0), newRow = row.world(3);
  // The writer died after the parity and before the data: parity new, data old.
  std::vector<std::string> stored = oldRow;
  stored[4] = newRow[4];
  stored[5] = newRow[5];
  std::vector<uint8_t*> ptrs;
  for (auto& b : stored) ptrs.push_back(reinterpret_cast<uint8_t*>(b.data()));
  REQUIRE(row.code.reconstruct(ptrs.data(), {1}, kBlockSize));
  CHECK(stored[1] != row.base[1]);
  std::vector<const uint8_t*> cptrs;
  for (auto& b : oldRow) cptrs.push_back(bytesOf(b));
  cptrs[1] = nullptr;
  cptrs[4] = bytesOf(newRow[4]);
  cptrs[5] = bytesOf(newRow[5]);
  std::string out(kBlockSize, '\0');
  REQUIRE(agreeOnLostBlock(row.code, 1, cptrs, row.rowRecords(),
                           reinterpret_cast<uint8_t*>(out.data())));
  CHECK((out == row.base[1]));
}

TEST_CASE("row agreement: one parity block decodes when the worlds agree, and refuses when they do not") {
  Row row(9);
  auto w0 = row.world(0), w3 = row.world(3);
  std::string out(kBlockSize, '\0');
  auto* dest = reinterpret_cast<uint8_t*>(out.data());
  std::vector<const uint8_t*> ptrs;
  for (auto& b : w0) ptrs.push_back(bytesOf(b));
  ptrs[1] = nullptr;
  ptrs[5] = nullptr;
  SUBCASE("no records: a plain decode") {
    REQUIRE(agreeOnLostBlock(row.code, 1, ptrs, {}, dest));
    CHECK((out == row.base[1]));
  }
  SUBCASE("records: which world parity 4 holds cannot be told, so no block is guessed") {
    auto ok = agreeOnLostBlock(row.code, 1, ptrs, row.rowRecords(), dest);
    REQUIRE(!ok);
    CHECK(ok.error().code == Errc::kBusy);
  }
  SUBCASE("a second unreadable data block") {
    ptrs[5] = bytesOf(w0[5]);
    ptrs[3] = nullptr;
    auto ok = agreeOnLostBlock(row.code, 1, ptrs, row.rowRecords(), dest);
    REQUIRE(!ok);
    CHECK(ok.error().code == Errc::kUnavailable);
  }
  SUBCASE("no parity block") {
    ptrs[4] = nullptr;
    auto ok = agreeOnLostBlock(row.code, 1, ptrs, row.rowRecords(), dest);
    REQUIRE(!ok);
    CHECK(ok.error().code == Errc::kUnavailable);
  }
  (void)w3;
}

TEST_CASE("row agreement: data ahead of parity (an ordering the applier never makes) is refused, not guessed") {
  Row row(10);
  auto w0 = row.world(0), w3 = row.world(3);
  std::vector<std::string> stored = w0;
  stored[0] = w3[0];  // data new, parity old
  stored[2] = w3[2];
  std::vector<const uint8_t*> ptrs;
  for (auto& b : stored) ptrs.push_back(bytesOf(b));
  ptrs[1] = nullptr;
  std::string out(kBlockSize, '\0');
  auto ok = agreeOnLostBlock(row.code, 1, ptrs, row.rowRecords(),
                             reinterpret_cast<uint8_t*>(out.data()));
  // World 0 with the stored (new) data fits neither parity; the record worlds do not either.
  if (ok) {
    CHECK((out == row.base[1]));
  } else {
    CHECK(ok.error().code == Errc::kBusy);
  }
}

// A large write that died between its data and its parity: every data block of row 1 new, its
// parity old. Shard 1 is lost; the decode of its block in row 1 is garbage, and only a parity
// block beyond the k shards the decode used can tell.
TEST_CASE("row agreement: a decoded row whose parity disagrees with its data is found when a shard is to spare") {
  const int k = 4, m = 2, n = 6, rows = 3;
  const size_t len = rows * kBlockSize;
  ErasureCode code(k, m);
  std::mt19937_64 rng(99);
  auto random = [&rng](size_t size) {
    std::string b(size, '\0');
    for (auto& c : b) c = char(rng());
    return b;
  };
  std::vector<std::string> old(n), now(n);
  for (int j = 0; j < k; ++j) old[j] = random(len);
  auto encode = [&code, k, n, len](std::vector<std::string>& shards) {
    std::vector<const uint8_t*> in;
    std::vector<uint8_t*> out;
    for (int j = 0; j < k; ++j) in.push_back(bytesOf(shards[j]));
    for (int j = k; j < n; ++j) {
      shards[j].assign(len, '\0');
      out.push_back(reinterpret_cast<uint8_t*>(shards[j].data()));
    }
    code.encode(in.data(), out.data(), len);
  };
  encode(old);
  now = old;
  for (int j = 0; j < k; ++j) now[j].replace(kBlockSize, kBlockSize, random(kBlockSize));
  encode(now);
  std::vector<std::string> stored = old;  // the write's data landed, its parity did not
  for (int j = 0; j < k; ++j) stored[j] = now[j];

  // Shard 1 lost: decode it from the others, as a degraded read does.
  auto decodeWithout = [&](std::vector<std::string> shards, std::vector<int> missing) {
    std::vector<uint8_t*> ptrs;
    for (auto& s : shards) ptrs.push_back(reinterpret_cast<uint8_t*>(s.data()));
    REQUIRE(code.reconstruct(ptrs.data(), missing, len).ok());
    return shards;
  };
  auto pointers = [&](const std::vector<std::string>& shards, std::vector<int> missing) {
    std::vector<const uint8_t*> p;
    for (int j = 0; j < n; ++j) {
      bool gone = std::find(missing.begin(), missing.end(), j) != missing.end();
      p.push_back(j >= k && gone ? nullptr : bytesOf(shards[j]));
    }
    return p;
  };

  SUBCASE("both parity blocks read: row 1 is found, rows 0 and 2 are not") {
    auto decoded = decodeWithout(stored, {1});
    // What the check guards against: the decoded block is neither the old nor the new one.
    CHECK(decoded[1].substr(kBlockSize, kBlockSize) != old[1].substr(kBlockSize, kBlockSize));
    CHECK(decoded[1].substr(kBlockSize, kBlockSize) != now[1].substr(kBlockSize, kBlockSize));
    CHECK(rowsDisagreeingWithParity(code, pointers(decoded, {1}), len) ==
          std::vector<uint64_t>{1});
  }
  SUBCASE("a consistent stripe, old or new, has no such row") {
    CHECK(rowsDisagreeingWithParity(code, pointers(decodeWithout(old, {1}), {1}), len).empty());
    CHECK(rowsDisagreeingWithParity(code, pointers(decodeWithout(now, {1}), {1}), len).empty());
  }
  SUBCASE("with exactly k shards read nothing is to spare: the mix cannot be told") {
    auto decoded = decodeWithout(stored, {1, 5});
    CHECK(rowsDisagreeingWithParity(code, pointers(decoded, {1, 5}), len).empty());
  }
}
