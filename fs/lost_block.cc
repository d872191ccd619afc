#include "fs/lost_block.h"

#include <cstring>

#include "fs/types.h"

namespace tessera {

const kj::byte* lostBlockBytes() {
  static const auto block = [] {
    static kj::byte b[kBlockSize];
    const char text[] = "tessera: lost block (rebuilt from a row holding a mix of two writes)\n";
    for (size_t i = 0; i < kBlockSize; ++i) b[i] = kj::byte(text[i % (sizeof(text) - 1)]);
    return b;
  }();
  return block;
}

bool isLostBlock(const kj::byte* block) {
  return memcmp(block, lostBlockBytes(), kBlockSize) == 0;
}

}  // namespace tessera
