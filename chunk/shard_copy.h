// chunk/shard_copy.h — copies one shard of a chunk to a shard of another chunk on this server
// (ChunkService.copy: copy-on-write of a shared chunk, meta/meta_clone.cc). The bytes go
// through the disk set like any read and write: every block is checked against its CRC when
// read and stored with it, and blocks that are all zeros are not written, so a sparse shard
// stays sparse. Whatever the target held before is removed first; the copy is fdatasync'ed
// before the promise resolves. A crash midway leaves a partial target that no chunk record
// names (the meta leader switches to it only after every copy answered): an orphan, deleted
// once the inventory reports show it.
// Runs on the chunk server's event loop; the disk set must outlive the promise.
#pragma once
#include <kj/async.h>

#include "chunk/disk_set.h"

namespace tessera::chunk {

// Copies shard range [0, length) (a multiple of 4 KiB) of `from` to `to` (the same shard index
// of another chunk) and returns the bytes written. kNotFound if `from` is not here;
// kCorruption if a block of it fails its CRC; kNoSpace / kIo from the disks.
kj::Promise<Result<uint64_t>> copyShard(DiskSet& disks, ShardKey from, ShardKey to, Layout layout,
                                        uint64_t length);

}  // namespace tessera::chunk
