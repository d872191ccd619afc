#include "fs/erasure.h"

#include <algorithm>

#include <isa-l/erasure_code.h>

namespace tessera {

ErasureCode::ErasureCode(int k, int m) : k_(k), m_(m) {
  KJ_REQUIRE(k >= 1 && m >= 1 && k + m <= 32, k, m);
  matrix_.resize(size_t(k + m) * k);
  gf_gen_cauchy1_matrix(matrix_.data(), k + m, k);
  encodeTables_.resize(size_t(32) * k * m);
  ec_init_tables(k, m, &matrix_[size_t(k) * k], encodeTables_.data());
}

void ErasureCode::encode(const uint8_t* const* data, uint8_t* const* parity, size_t len) {
  ec_encode_data(int(len), k_, m_, encodeTables_.data(), const_cast<uint8_t**>(data),
                 const_cast<uint8_t**>(parity));
}

// To rebuild, take the rows of the generator matrix of k surviving shards, invert that k x k
// matrix (any k rows of a Cauchy generator are independent), and multiply: a missing data shard
// is its row of the inverse applied to the survivors; a missing parity shard is its generator
// row times that inverse.
const std::vector<uint8_t>& ErasureCode::decodeTables(const std::vector<int>& missing,
                                                      std::vector<int>& sources) {
  auto it = decoders_.find(missing);
  if (it != decoders_.end()) {
    sources = it->second.sources;
    return it->second.tables;
  }
  Decoder d;
  for (int i = 0; i < k_ + m_ && int(d.sources.size()) < k_; ++i) {
    if (!std::binary_search(missing.begin(), missing.end(), i)) d.sources.push_back(i);
  }
  std::vector<uint8_t> sub(size_t(k_) * k_), inv(size_t(k_) * k_);
  for (int r = 0; r < k_; ++r) {
    std::copy_n(&matrix_[size_t(d.sources[r]) * k_], k_, &sub[size_t(r) * k_]);
  }
  int rc = gf_invert_matrix(sub.data(), inv.data(), k_);
  KJ_ASSERT(rc == 0, "Cauchy submatrix not invertible");
  std::vector<uint8_t> rows(size_t(missing.size()) * k_);
  for (size_t r = 0; r < missing.size(); ++r) {
    int target = missing[r];
    uint8_t* out = &rows[r * k_];
    if (target < k_) {
      std::copy_n(&inv[size_t(target) * k_], k_, out);
    } else {
      const uint8_t* gen = &matrix_[size_t(target) * k_];
      for (int c = 0; c < k_; ++c) {
        uint8_t s = 0;
        for (int j = 0; j < k_; ++j) s ^= gf_mul(gen[j], inv[size_t(j) * k_ + c]);
        out[c] = s;
      }
    }
  }
  d.tables.resize(size_t(32) * k_ * missing.size());
  ec_init_tables(k_, int(missing.size()), rows.data(), d.tables.data());
  auto& stored = decoders_.emplace(missing, std::move(d)).first->second;
  sources = stored.sources;
  return stored.tables;
}

Status ErasureCode::reconstruct(uint8_t* const* shards, const std::vector<int>& missingIn,
                                size_t len) {
  std::vector<int> missing = missingIn;
  std::sort(missing.begin(), missing.end());
  missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
  if (missing.empty()) return Status();
  if (int(missing.size()) > m_) {
    return Error{Errc::kUnavailable, std::to_string(missing.size()) + " of " +
                                         std::to_string(k_ + m_) + " shards missing, at most " +
                                         std::to_string(m_) + " can be rebuilt"};
  }
  for (int i : missing) KJ_REQUIRE(i >= 0 && i < k_ + m_, i);
  std::vector<int> sources;
  const auto& tables = decodeTables(missing, sources);
  std::vector<uint8_t*> in(k_), out(missing.size());
  for (int i = 0; i < k_; ++i) in[i] = shards[sources[i]];
  for (size_t i = 0; i < missing.size(); ++i) out[i] = shards[missing[i]];
  ec_encode_data(int(len), k_, int(missing.size()), const_cast<uint8_t*>(tables.data()), in.data(),
                 out.data());
  return Status();
}

}  // namespace tessera
