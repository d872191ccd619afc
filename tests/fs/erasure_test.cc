#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "fs/erasure.h"

using namespace tessera;

namespace {

// Calls f(missing) for every subset of {0..n-1} with 1..maxSize members.
template <typename F>
void forEachSubset(int n, int maxSize, F f) {
  for (uint32_t mask = 1; mask < (1u << n); ++mask) {
    if (__builtin_popcount(mask) > maxSize) continue;
    std::vector<int> missing;
    for (int i = 0; i < n; ++i) {
      if (mask & (1u << i)) missing.push_back(i);
    }
    f(missing);
  }
}

struct Stripe {
  int k, m;
  size_t len;
  std::vector<std::vector<uint8_t>> shards;

  Stripe(int k_, int m_, size_t len_, uint32_t seed) : k(k_), m(m_), len(len_) {
    std::mt19937 rng(seed);
    shards.assign(size_t(k + m), std::vector<uint8_t>(len));
    for (int i = 0; i < k; ++i) {
      for (auto& b : shards[i]) b = uint8_t(rng());
    }
  }
  std::vector<uint8_t*> ptrs() {
    std::vector<uint8_t*> p;
    for (auto& s : shards) p.push_back(s.data());
    return p;
  }
};

}  // namespace

TEST_CASE("erasure code: every combination of up to m lost shards is rebuilt exactly") {
  struct Shape { int k, m; };
  for (Shape shape : {Shape{1, 1}, Shape{2, 1}, Shape{2, 2}, Shape{3, 2}, Shape{4, 2},
                      Shape{6, 3}, Shape{8, 3}, Shape{10, 4}}) {
    CAPTURE(shape.k);
    CAPTURE(shape.m);
    const size_t len = 4096 + 17;  // not a multiple of anything ISA-L vectorizes by
    Stripe stripe(shape.k, shape.m, len, uint32_t(shape.k * 100 + shape.m));
    ErasureCode code(shape.k, shape.m);
    auto p = stripe.ptrs();
    code.encode(p.data(), p.data() + shape.k, len);
    const auto original = stripe.shards;
    int combos = 0;
    forEachSubset(shape.k + shape.m, shape.m, [&](const std::vector<int>& missing) {
      auto damaged = original;
      for (int i : missing) std::fill(damaged[i].begin(), damaged[i].end(), 0xA5);
      std::vector<uint8_t*> dp;
      for (auto& s : damaged) dp.push_back(s.data());
      REQUIRE(code.reconstruct(dp.data(), missing, len).ok());
      CHECK(damaged == original);
      ++combos;
    });
    CHECK(combos > 0);
  }
}

TEST_CASE("erasure code: more than m lost shards is refused, not guessed") {
  ErasureCode code(4, 2);
  Stripe stripe(4, 2, 64, 1);
  auto p = stripe.ptrs();
  code.encode(p.data(), p.data() + 4, 64);
  auto r = code.reconstruct(p.data(), {0, 1, 5}, 64);
  REQUIRE(!r.ok());
  CHECK(r.error().code == Errc::kUnavailable);
}

TEST_CASE("erasure code: parity of a row range equals that range of the full parity") {
  // The client re-encodes only the rows a small write touched; that is sound only if parity is
  // column-wise.
  ErasureCode code(4, 2);
  Stripe full(4, 2, 65536, 7);
  auto p = full.ptrs();
  code.encode(p.data(), p.data() + 4, 65536);
  const size_t off = 8192, len = 4096;
  std::vector<const uint8_t*> data;
  for (int i = 0; i < 4; ++i) data.push_back(full.shards[i].data() + off);
  std::vector<std::vector<uint8_t>> parity(2, std::vector<uint8_t>(len));
  std::vector<uint8_t*> pp{parity[0].data(), parity[1].data()};
  code.encode(data.data(), pp.data(), len);
  for (int j = 0; j < 2; ++j) {
    CHECK(std::equal(parity[j].begin(), parity[j].end(), full.shards[4 + j].begin() + off));
  }
}
