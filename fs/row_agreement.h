// fs/row_agreement.h — the lost data block of an ec row that an interrupted apply of the
// write log may have left half written, told by agreement between its parity blocks. Pure
// arithmetic on 4 KiB blocks: no I/O.
//
// The problem. The applier writes a row's new data blocks and re-encoded parity in place. A
// writer killed in the middle leaves some of them new and some old; the records stay in the
// log and the next lease holder re-applies them, which needs only the data blocks and is
// idempotent. But if a data block of that row that no record covers is lost too (its server
// died with the writer — one host — or before the re-apply), the plain decode mixes old and
// new blocks and returns garbage, for a block that nobody even wrote.
//
// The argument. Number the records that touch the row in log order (epoch, seq); "world s" is
// the row as it is after its first s records. The applier writes and syncs every parity
// block of a batch before any data block of it (client/data_path_apply.cc), and batches of one
// chunk run one after the other, in log order. So at every instant, each parity block holds
// some world, and every data block holds that world or an older one — data never runs ahead
// of parity. The lost block X is not covered by any record, so it is the same in every world.
// For parity block p and world s, decode X from p and the row's data in world s: a data block
// covered by one of the first s records is that record's block (known), any other is the
// stored block (which, being no newer than p's world, has not been overwritten by a later
// record yet). If p holds world s, that candidate is X. So X is among every parity block's
// candidates; with two or more parity blocks it is, but for a coincidence of 4 KiB of
// arbitrary bytes, the one candidate they all share. With one parity block the candidates
// agree only if the worlds do not matter; otherwise, and when no candidate or more than one
// is shared (the row is being applied under a reader's feet), it is an error: never a guess.
#pragma once
#include <cstdint>
#include <vector>

#include "fs/erasure.h"
#include "fs/result.h"

namespace tessera {

// A record's 4 KiB block in the row: which data shard it replaces.
struct RowRecord {
  int shard;
  const uint8_t* block;
};

// `stored[j]` (k + m entries): the stored block of shard j in the row, nullptr if unreadable.
// Every data shard but `lost` must be readable. `records`: every log record's block in the row,
// oldest first; none of shard `lost`. On success X is in `out` (kBlockSize bytes).
// kUnavailable if no parity block is readable or another data block is not; kBusy if the
// candidates do not single out one block (a reader may try again: an apply may be under way).
Status agreeOnLostBlock(ErasureCode& code, int lost, const std::vector<const uint8_t*>& stored,
                        const std::vector<RowRecord>& records, uint8_t* out);

// The block rows of a decoded stripe range whose parity disagrees with its data: the rows that
// hold a mix of two writes. `shards` (k + m entries, `len` bytes each, len a multiple of
// kBlockSize): every data shard complete (lost ones decoded), each parity shard that was read
// (`read[j]`), nullptr for the others. Returns the indexes of the block rows in [0, len /
// kBlockSize) where the parity encoded from the data differs from a parity shard that was read.
//
// Why it is needed. A decode of a lost data block from a row that an interrupted or concurrent
// write left half written (some blocks old, some new) yields bytes that neither write ever
// held. The decode makes the data agree with the k shards it used; only a shard beyond those
// can tell. So this finds the mix when more than k shards were read, and never when exactly k
// were (with ec(k,m), one lost data shard and every parity shard readable: m - 1 to spare).
std::vector<uint64_t> rowsDisagreeingWithParity(ErasureCode& code,
                                                const std::vector<const uint8_t*>& shards,
                                                size_t len);

}  // namespace tessera
