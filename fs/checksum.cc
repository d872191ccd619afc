#include "fs/checksum.h"

#include <isa-l/crc.h>

#include "fs/types.h"

namespace tessera {

uint32_t crc32c(const void* data, size_t len) {
  return ~crc32_iscsi(static_cast<unsigned char*>(const_cast<void*>(data)), int(len), 0xFFFFFFFF);
}

uint32_t zeroBlockCrc() {
  static const uint32_t crc = [] {
    static const unsigned char zeros[kBlockSize] = {};
    return crc32c(zeros, sizeof zeros);
  }();
  return crc;
}

}  // namespace tessera
