// The wire form of block CRCs: what a sender computes, the receiver checks again.
#include <capnp/message.h>
#include <doctest/doctest.h>

#include "fs/proto/chunk.capnp.h"
#include "fs/wire.h"

using namespace tessera;

TEST_CASE("wire: block CRCs set by the sender pass the receiver's check — damage does not") {
  capnp::MallocMessageBuilder message;
  auto piece = message.initRoot<proto::Piece>();
  auto data = kj::heapArray<kj::byte>(3 * kBlockSize);
  for (size_t i = 0; i < data.size(); ++i) data[i] = kj::byte(i * 7 + 3);
  piece.setData(data);
  setBlockCrcs(piece.initCrcs(3), data);
  auto reader = piece.asReader();
  CHECK(checkBlockCrcs(reader.getData(), reader.getCrcs(), "piece").ok());

  piece.getData()[kBlockSize + 5] ^= 1;  // the second block, damaged on the way
  auto bad = checkBlockCrcs(reader.getData(), reader.getCrcs(), "piece");
  REQUIRE(bad.code() == Errc::kCorruption);
  CHECK(bad.error().detail == "piece: block 1 failed its CRC");

  piece.initCrcs(2);  // a list that does not match the data
  CHECK(checkBlockCrcs(reader.getData(), piece.asReader().getCrcs(), "piece").code() ==
        Errc::kCorruption);
  auto partial = kj::heapArray<kj::byte>(100);
  piece.setData(partial);
  piece.initCrcs(0);
  CHECK(checkBlockCrcs(piece.asReader().getData(), piece.asReader().getCrcs(), "piece").code() ==
        Errc::kCorruption);
}
