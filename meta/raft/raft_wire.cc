#include "meta/raft/raft_wire.h"

namespace tessera::meta::raft {

void toWire(const SnapshotMeta& m, proto::RaftSnapshotMeta::Builder b) {
  b.setIndex(m.index.value);
  b.setTerm(m.term.value);
  auto voters = b.initVoters(uint32_t(m.conf.voters.size()));
  for (size_t i = 0; i < m.conf.voters.size(); ++i) voters.set(i, m.conf.voters[i].value);
}

SnapshotMeta fromWire(proto::RaftSnapshotMeta::Reader r) {
  SnapshotMeta m;
  m.index = LogIndex(r.getIndex());
  m.term = Term(r.getTerm());
  for (auto v : r.getVoters()) m.conf.voters.push_back(NodeId(v));
  return m;
}

void toWire(const Message& m, proto::RaftMessage::Builder b) {
  b.setType(uint8_t(m.type));
  b.setFrom(m.from.value);
  b.setTo(m.to.value);
  b.setTerm(m.term.value);
  b.setLogTerm(m.logTerm.value);
  b.setIndex(m.index.value);
  if (!m.entries.empty()) {
    auto entries = b.initEntries(uint32_t(m.entries.size()));
    for (size_t i = 0; i < m.entries.size(); ++i) {
      const Entry& e = m.entries[i];
      auto eb = entries[i];
      eb.setTerm(e.term.value);
      eb.setIndex(e.index.value);
      eb.setType(uint8_t(e.type));
      eb.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(e.data.data()), e.data.size()));
    }
  }
  b.setCommit(m.commit.value);
  b.setReject(m.reject);
  b.setRejectHint(m.rejectHint.value);
  if (m.snapshot) {
    b.setHasSnapshot(true);
    toWire(*m.snapshot, b.initSnapshot());
  }
  b.setContext(m.context);
  b.setTarget(m.target.value);
  b.setTransfer(m.transfer);
}

Result<Message> fromWire(proto::RaftMessage::Reader r) {
  Message m;
  if (r.getType() > uint8_t(MessageType::kTransferLeader)) {
    return Error{Errc::kInvalid, "unknown raft message type " + std::to_string(r.getType())};
  }
  m.type = MessageType(r.getType());
  m.from = NodeId(r.getFrom());
  m.to = NodeId(r.getTo());
  m.term = Term(r.getTerm());
  m.logTerm = Term(r.getLogTerm());
  m.index = LogIndex(r.getIndex());
  for (auto e : r.getEntries()) {
    if (e.getType() > uint8_t(Entry::Type::kConfChange)) {
      return Error{Errc::kInvalid, "unknown raft entry type"};
    }
    Entry entry;
    entry.term = Term(e.getTerm());
    entry.index = LogIndex(e.getIndex());
    entry.type = Entry::Type(e.getType());
    auto data = e.getData();
    entry.data.assign(reinterpret_cast<const char*>(data.begin()), data.size());
    m.entries.push_back(std::move(entry));
  }
  m.commit = LogIndex(r.getCommit());
  m.reject = r.getReject();
  m.rejectHint = LogIndex(r.getRejectHint());
  if (r.getHasSnapshot()) m.snapshot = fromWire(r.getSnapshot());
  m.context = r.getContext();
  m.target = NodeId(r.getTarget());
  m.transfer = r.getTransfer();
  return m;
}

}  // namespace tessera::meta::raft
