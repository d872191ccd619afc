#include <doctest/doctest.h>

#include <vector>

#include "fs/checksum.h"
#include "fs/types.h"

using namespace tessera;

TEST_CASE("crc32c matches the published check value") {
  CHECK(crc32c("123456789", 9) == 0xe3069283u);
  CHECK(crc32c("", 0) == 0u);
}

TEST_CASE("crc32c of a zero block is what an unwritten block checks against") {
  std::vector<uint8_t> zeros(kBlockSize, 0);
  CHECK(zeroBlockCrc() == crc32c(zeros.data(), zeros.size()));
}

TEST_CASE("crc32c sees a single flipped bit anywhere in a block") {
  std::vector<uint8_t> block(kBlockSize);
  for (size_t i = 0; i < block.size(); ++i) block[i] = uint8_t(i * 131 + 7);
  uint32_t good = crc32c(block.data(), block.size());
  for (size_t byte : {size_t(0), size_t(1), size_t(2047), size_t(4095)}) {
    for (int bit = 0; bit < 8; ++bit) {
      block[byte] ^= uint8_t(1 << bit);
      CHECK(crc32c(block.data(), block.size()) != good);
      block[byte] ^= uint8_t(1 << bit);
    }
  }
  CHECK(crc32c(block.data(), block.size()) == good);
}
