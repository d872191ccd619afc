// fs/lost_block.h — what a lost block holds. When a chunk server's rebuild finds that a data
// block's row holds a mix of two writes (fs/row_agreement.h), the block's content is known
// nowhere: it stores these bytes instead, with a CRC table entry that fails on purpose
// (chunk/shard_file.h markLost), and every read of it fails until a write replaces it.
//
// The write log's applier encodes parity over the bytes a lost block holds, like over any
// stored block (client/data_path_apply.cc): a write into that row then keeps the redundancy of
// every other block in it. A data block decoded from such a row is this pattern, so whoever
// decodes a data block (a degraded reader, a rebuild) treats the pattern as lost, never as
// data; and a write of part of a block that holds the pattern is refused (the rest of the
// block is not known). A block that a user wrote with exactly these bytes is read as written
// from its own shard; only a decode or a partial overwrite of it would be refused.
#pragma once
#include <kj/common.h>

namespace tessera {

// kBlockSize (4096) bytes: a line a human looking at a shard file recognises, repeated.
const kj::byte* lostBlockBytes();
// Whether the kBlockSize bytes at `block` are the lost pattern.
bool isLostBlock(const kj::byte* block);

}  // namespace tessera
