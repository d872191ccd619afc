// fs/wire.h — conversions between fs/types.h values and their Cap'n Proto forms. Readers are
// validated where a bad value could hurt: a layout outside its bounds becomes kInvalid.
#pragma once
#include <vector>

#include "fs/proto/common.capnp.h"
#include "fs/result.h"
#include "fs/types.h"

namespace tessera {

void toWire(const Error& e, proto::Error::Builder b);
void okToWire(proto::Error::Builder b);
// kOk → ok Status; anything else → that Error. Unknown codes from a newer peer become kIo.
Status fromWire(proto::Error::Reader r);

void toWire(const Attr& a, proto::Attr::Builder b);
Attr fromWire(proto::Attr::Reader r);

void toWire(const Layout& l, proto::Layout::Builder b);
Result<Layout> fromWire(proto::Layout::Reader r);

void toWire(const ChunkDesc& c, proto::ChunkDesc::Builder b);
Result<ChunkDesc> fromWire(proto::ChunkDesc::Reader r);
// Every descriptor of a list (a getChunks reply), or the first one's error.
Result<std::vector<ChunkDesc>> fromWire(capnp::List<proto::ChunkDesc>::Reader list);

// The CRC32C of each 4 KiB block of `data` (whole blocks), one per entry of `out`, which must
// have data.size() / 4096 entries.
void setBlockCrcs(capnp::List<uint32_t>::Builder out, kj::ArrayPtr<const kj::byte> data);
// kCorruption (naming `what`) unless `data` is whole blocks, `crcs` has one entry per block and
// each block matches its entry: the receiver's own check of what a peer sent.
Status checkBlockCrcs(capnp::Data::Reader data, capnp::List<uint32_t>::Reader crcs,
                      const std::string& what);

// Sets `error` of any reply builder from a Result or Status.
template <typename Builder, typename T>
void setError(Builder b, const Result<T>& r) {
  if (r) {
    okToWire(b.initError());
  } else {
    toWire(r.error(), b.initError());
  }
}

}  // namespace tessera
