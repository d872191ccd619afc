// tests/support/qemu.h — the real QEMU tools driven from integration tests (Debian 12's QEMU
// 7.2: qemu-img, qemu-io, qemu-system-x86_64): one-shot runs, a qemu-io that keeps an image open
// and takes commands one at a time, a QMP client, and a guestless TCG virtual machine with one
// disk. Every QEMU process is a test::Process, SIGKILLed when its owner goes away (also when a
// check fails) and when the test process dies; every wait is bounded.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace tessera::test {

extern const char* const kQemuImg;     // /usr/bin/qemu-img
extern const char* const kQemuIo;      // /usr/bin/qemu-io
extern const char* const kQemuSystem;  // /usr/bin/qemu-system-x86_64

// Why the QEMU tests cannot run here ("" when they can): a binary is missing.
std::string qemuUnavailableReason();

// `s` quoted for /bin/sh.
std::string shellQuote(const std::string& s);

// qemu-img ARGS.
RunResult qemuImg(std::vector<std::string> args, int timeoutMs = 120'000);
// qemu-io OPTIONS (format, cache, aio...) -c COMMAND... IMAGE.
RunResult qemuIo(const std::vector<std::string>& options, const std::string& image,
                 const std::vector<std::string>& commands, int timeoutMs = 120'000);
// Output of qemu-io commands in which every command succeeded and every -P pattern verified:
// qemu-io reports "Pattern verification failed", "read failed: ...", "write failed: ...".
bool outputClean(const std::string& out);
// A qemu-io run with a clean output and exit status 0 (qemu-io exits 1 when a command failed).
bool ioClean(const RunResult& r);

// A qemu-io process that keeps an image open and runs commands sent to it one at a time, as a
// running VM holds its disk. Its stdin is a FIFO (DIR/NAME.in) this object holds open for
// writing, its output DIR/NAME.out; qemu-io prints its prompt "qemu-io> " once the image is open
// and again after each command, so the output of a command is the text between two prompts.
// Killed when it goes away. Throws std::runtime_error when it cannot start.
class QemuIoSession {
 public:
  QemuIoSession(const std::string& dir, const std::string& name,
                const std::vector<std::string>& options, const std::string& image);
  ~QemuIoSession();
  QemuIoSession(const QemuIoSession&) = delete;
  QemuIoSession& operator=(const QemuIoSession&) = delete;

  // Waits for the first prompt: true once the image is open; false (with qemu-io's output in
  // `why`) when qemu-io exited, e.g. refused by a lock, or did not answer in time.
  bool opened(std::string* why, int timeoutMs = 30'000);
  // Runs one command; its output. Throws if qemu-io does not answer within the timeout.
  std::string command(const std::string& c, int timeoutMs = 60'000);
  // Sends quit and waits (bounded) for the exit: the image is closed (and its locks gone).
  bool quit(int timeoutMs = 30'000);

 private:
  size_t prompts() const;

  std::string fifo_, log_;
  int fd_ = -1;
  Process process_;
  size_t seen_ = 0;
};

// A QMP connection to a QEMU's monitor socket: one JSON object per line; replies start with
// {"return" or {"error", events with {"timestamp" and are skipped. Every read is bounded; a
// timeout or a closed connection throws std::runtime_error.
class Qmp {
 public:
  // Connects (retrying until QEMU listens, bounded; gives up early if `qemu` exits), reads the
  // greeting and leaves capabilities negotiation.
  Qmp(const std::string& socketPath, Process& qemu, int timeoutMs = 30'000);
  ~Qmp();
  Qmp(const Qmp&) = delete;
  Qmp& operator=(const Qmp&) = delete;

  // Sends one command (a JSON object); the reply line.
  std::string execute(const std::string& json, int timeoutMs = 30'000);
  // An HMP command line through human-monitor-command; what it returns as text ("QMP error:
  // ..." if QMP refused it).
  std::string hmp(const std::string& commandLine, int timeoutMs = 120'000);
  // The value of `"key": "value"` in a reply (its first occurrence), "" if absent.
  static std::string field(const std::string& reply, const std::string& key);

 private:
  std::string readLine(int timeoutMs);

  int fd_ = -1;
  std::string buffer_;
};

// A guestless TCG virtual machine (qemu-system-x86_64 -nodefaults, 64 MiB) with one virtio-blk
// disk `image` (qcow2, drive id "drive0") opened with cache=none (O_DIRECT) and aio=native,
// QMP on DIR/NAME.qmp and its output in DIR/NAME.log; with `incoming` (e.g. "unix:PATH"), a
// migration destination waiting there. Killed when it goes away.
struct Vm {
  Vm(const std::string& dir, const std::string& name, const std::string& image,
     const std::string& incoming = "");

  // Runs a qemu-io command on the disk through the monitor; its output. (QEMU 7.2 prints what
  // the HMP qemu-io command reports on its stdout, our log, before the command returns.)
  std::string io(const std::string& command);
  // Quits through QMP and waits (bounded) for the exit, so the image is closed.
  bool quit();

  std::string qmpSocket, log;
  Process process;
  std::unique_ptr<Qmp> qmp;
};

// Polls query-migrate (bounded) until the status is `waitFor` or the migration ended; the
// status then ("completed", "failed", "cancelled", `waitFor`, or the last one seen).
std::string waitMigration(Qmp& qmp, const std::string& waitFor, int timeoutMs = 120'000);

}  // namespace tessera::test
