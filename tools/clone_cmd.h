// tools/clone_cmd.h — `tessera clone SRC DST`: an instant copy-on-write copy of a file on a
// Tessera mount. Works through the mount (copy_file_range, which the mount turns into shared
// chunks: client/client_clone.cc), so it needs no meta server address.
#pragma once
#include <string>
#include <vector>

namespace tessera::tools {

// args: SRC DST [--force]. DST must not exist unless --force (then it is replaced). Exit 0 when
// DST holds SRC's content, 1 on error (printed).
int cloneCommand(const std::vector<std::string>& args);

// The whole of `in` (open for reading) as `out` (empty, open for writing), at one point in time,
// through the mount's clone ioctls (fs/clone_ioctl.h): 0, or the errno — ENOTTY where the mount
// (or the file system) has no such call.
int cloneWholeFile(int in, int out);

}  // namespace tessera::tools
