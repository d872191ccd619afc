// fs/erasure.h — Reed-Solomon erasure coding of k data shards into m parity shards with ISA-L
// (Cauchy matrix, so every k of the k + m shards decode). Works column-wise: any length, and
// byte i of every parity shard depends only on byte i of the data shards, so a range of rows can
// be encoded or rebuilt alone. Decode tables are cached per erasure pattern. Not thread-safe.
#pragma once
#include <cstdint>
#include <map>
#include <vector>

#include "fs/result.h"

namespace tessera {

class ErasureCode {
 public:
  ErasureCode(int k, int m);  // 1 <= k, 1 <= m, k + m <= 32

  int k() const { return k_; }
  int m() const { return m_; }

  // parity[j] = parity shard j of data[0..k), `len` bytes each.
  void encode(const uint8_t* const* data, uint8_t* const* parity, size_t len);

  // shards[0..k+m) point at `len`-byte buffers; shards listed in `missing` hold garbage and are
  // rebuilt in place from the others. kUnavailable if more than m are missing.
  Status reconstruct(uint8_t* const* shards, const std::vector<int>& missing, size_t len);

 private:
  const std::vector<uint8_t>& decodeTables(const std::vector<int>& missing,
                                           std::vector<int>& sources);

  int k_;
  int m_;
  std::vector<uint8_t> matrix_;        // (k+m) x k, identity on top
  std::vector<uint8_t> encodeTables_;  // for the m parity rows
  struct Decoder {
    std::vector<int> sources;          // the k surviving shards used
    std::vector<uint8_t> tables;       // one row per missing shard
  };
  std::map<std::vector<int>, Decoder> decoders_;
};

}  // namespace tessera
