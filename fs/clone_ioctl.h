// fs/clone_ioctl.h — a whole file cloned at one point in time through a mount (the ioctls
// tessera-mount answers; `tessera clone` and `tessera snapshot` use them).
//
// copy_file_range clones too, but in pieces of what one call covers (under 4 GiB: its reply
// counts bytes in 32 bits), each at its own moment: a file written meanwhile (a running VM's
// image) would be cloned as a mix of moments. These two calls clone it all at once:
//
//   1. ioctl(src, TESSERA_IOC_CLONE_TOKEN, &token) on a descriptor of the source open for
//      reading: the mount answers with a random token naming the source, good for one use
//      within 60 s (a caller that could not open the source cannot name it).
//   2. ioctl(dst, TESSERA_IOC_CLONE_FROM, &from) with from.token = token on a descriptor of an
//      empty destination open for writing, on the same mount, with the source still open: the
//      destination becomes a copy-on-write clone of all of the source, its size included, in
//      one meta operation per 4096 chunks (256 GiB).
//
// Errors: ENOTTY from a mount without them; EBADF for a descriptor not open for reading
// (1) or writing (2); EINVAL for an unknown, used or expired token, a destination that is not
// empty, or the source itself; EBUSY if a writer of the source did not let go within the
// mount's --meta-timeout.
#pragma once
#include <linux/ioctl.h>
#include <stdint.h>

struct TesseraCloneFrom {
  uint64_t token;
  uint64_t flags;  // 0
};

#define TESSERA_IOC_CLONE_TOKEN _IOR(0xE5, 0x01, uint64_t)
#define TESSERA_IOC_CLONE_FROM _IOW(0xE5, 0x02, struct TesseraCloneFrom)
