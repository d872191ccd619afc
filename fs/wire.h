// fs/wire.h — conversions between fs/types.h values and their Cap'n Proto forms. Readers are
// validated where a bad value could hurt: a layout outside its bounds becomes kInvalid.
#pragma once
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
