// client/client_seek.cc — lseek SEEK_DATA and SEEK_HOLE, so that qemu-img convert, cp and
// backups skip a sparse image's holes.
//
// The map is the file's chunk map on the meta server: a chunk never written does not exist
// (DESIGN.md, "Data layout") and is a hole; a chunk that exists is data as a whole (finer would
// need the shards' own maps, which the meta server does not have). The end of the file is a
// hole. What this client buffered is written out first, so that its chunks exist.
#include "client/client.h"

namespace tessera::client {

kj::Promise<Result<std::optional<uint64_t>>> Client::seek(InodeId inode, uint64_t off, bool data) {
  using R = Result<std::optional<uint64_t>>;
  return flush(inode)
      .then([this, inode](Status s) -> kj::Promise<Result<Attr>> {
        if (!s) return Result<Attr>(s.error());
        return getattr(inode);
      })
      .then([this, inode, off, data](Result<Attr> attr) -> kj::Promise<R> {
        if (!attr) return R(attr.error());
        uint64_t size = attr->size;
        if (off >= size) return R(std::optional<uint64_t>());
        uint64_t last = (size - 1) / kChunkSize;
        // Walks windows of chunk indices from off's chunk to the last one.
        struct Walk {
          static kj::Promise<R> from(Client& c, InodeId inode, uint64_t off, uint64_t size,
                                     uint64_t last, bool data, uint64_t first) {
            // The meta server looks at most kMaxGetChunks indices a call (a 16 TiB file has
            // 262,144 chunks).
            uint64_t count = std::min(kMaxGetChunks, last - first + 1);
            return c.getChunks(inode, first, count)
                .then([&c, inode, off, size, last, data, first,
                       count](Result<std::vector<ChunkDesc>> chunks) -> kj::Promise<R> {
                  if (!chunks) return R(chunks.error());
                  std::vector<bool> present(count, false);
                  for (const ChunkDesc& d : *chunks) {
                    if (d.index >= first && d.index < first + count) present[d.index - first] = true;
                  }
                  for (uint64_t i = 0; i < count; ++i) {
                    if (present[i] == data) {
                      return R(std::optional<uint64_t>(std::max(off, (first + i) * kChunkSize)));
                    }
                  }
                  if (first + count <= last) {
                    return from(c, inode, off, size, last, data, first + count);
                  }
                  // No data after off; or no hole before the end, which is one.
                  return R(data ? std::optional<uint64_t>() : std::optional<uint64_t>(size));
                });
          }
        };
        return Walk::from(*this, inode, off, size, last, data, off / kChunkSize);
      });
}

}  // namespace tessera::client
