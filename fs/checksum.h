// fs/checksum.h — CRC32C (Castagnoli, as in iSCSI and ext4) through ISA-L.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tessera {

// The standard CRC32C of `len` bytes: crc32c("123456789") == 0xe3069283.
uint32_t crc32c(const void* data, size_t len);

// crc32c of one 4 KiB block of zeros: what an unwritten (sparse) block checks against.
uint32_t zeroBlockCrc();

}  // namespace tessera
