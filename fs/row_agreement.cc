// fs/row_agreement.cc — see row_agreement.h for the argument.
#include "fs/row_agreement.h"

#include <kj/debug.h>

#include <cstring>
#include <string>

#include "fs/types.h"

namespace tessera {

Status agreeOnLostBlock(ErasureCode& code, int lost, const std::vector<const uint8_t*>& stored,
                        const std::vector<RowRecord>& records, uint8_t* out) {
  const int k = code.k(), n = code.k() + code.m();
  KJ_REQUIRE(int(stored.size()) == n && lost >= 0 && lost < k);
  std::vector<int> parities;
  for (int j = 0; j < n; ++j) {
    if (j == lost) continue;
    if (j < k && !stored[j]) {
      return Error{Errc::kUnavailable, "two data blocks of a half-applied row are unreadable"};
    }
    if (j >= k && stored[j]) parities.push_back(j);
  }
  if (parities.empty()) {
    return Error{Errc::kUnavailable, "no parity block of a half-applied row is readable"};
  }
  // World s's data blocks, advanced one record at a time.
  std::vector<const uint8_t*> world(stored.begin(), stored.begin() + k);
  std::vector<std::string> bufs(n, std::string(kBlockSize, '\0'));
  // Per parity block: its distinct candidates.
  std::vector<std::vector<std::string>> candidates(parities.size());
  for (size_t s = 0; s <= records.size(); ++s) {
    if (s > 0) {
      const RowRecord& r = records[s - 1];
      KJ_REQUIRE(r.shard >= 0 && r.shard < k && r.shard != lost, r.shard, lost);
      world[r.shard] = r.block;
    }
    for (size_t i = 0; i < parities.size(); ++i) {
      int p = parities[i];
      std::vector<uint8_t*> ptrs(n);
      std::vector<int> missing{lost};
      for (int j = 0; j < n; ++j) {
        ptrs[j] = reinterpret_cast<uint8_t*>(bufs[j].data());
        if (j < k && j != lost) memcpy(ptrs[j], world[j], kBlockSize);
        if (j == p) memcpy(ptrs[j], stored[p], kBlockSize);
        if (j >= k && j != p) missing.push_back(j);
      }
      auto ok = code.reconstruct(ptrs.data(), missing, kBlockSize);
      if (!ok) return ok;
      auto& mine = candidates[i];
      bool seen = false;
      for (auto& c : mine) seen = seen || c == bufs[lost];
      if (!seen) mine.push_back(bufs[lost]);
    }
  }
  // The candidates every parity block has.
  std::vector<std::string> shared = candidates[0];
  for (size_t i = 1; i < candidates.size(); ++i) {
    std::vector<std::string> both;
    for (auto& c : shared) {
      for (auto& d : candidates[i]) {
        if (c == d) {
          both.push_back(c);
          break;
        }
      }
    }
    shared = std::move(both);
  }
  if (shared.size() != 1) {
    return Error{Errc::kBusy, std::to_string(shared.size()) + " blocks fit the " +
                                  std::to_string(parities.size()) +
                                  " parity blocks of a half-applied row"};
  }
  memcpy(out, shared[0].data(), kBlockSize);
  return Status();
}

std::vector<uint64_t> rowsDisagreeingWithParity(ErasureCode& code,
                                                const std::vector<const uint8_t*>& shards,
                                                size_t len) {
  const int k = code.k(), n = code.k() + code.m();
  KJ_REQUIRE(int(shards.size()) == n && len % kBlockSize == 0, shards.size(), len);
  for (int j = 0; j < k; ++j) KJ_REQUIRE(shards[j] != nullptr, j);
  std::vector<uint64_t> rows;
  std::vector<std::string> bufs(code.m(), std::string(len, '\0'));
  std::vector<uint8_t*> parity;
  for (auto& b : bufs) parity.push_back(reinterpret_cast<uint8_t*>(b.data()));
  code.encode(shards.data(), parity.data(), len);
  for (uint64_t row = 0; row < len / kBlockSize; ++row) {
    for (int j = k; j < n; ++j) {
      if (!shards[j]) continue;
      if (memcmp(parity[j - k] + row * kBlockSize, shards[j] + row * kBlockSize, kBlockSize) != 0) {
        rows.push_back(row);
        break;
      }
    }
  }
  return rows;
}

}  // namespace tessera
