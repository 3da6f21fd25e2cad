// Writer and validating mmap loader for the .xlmr format (docs/weights-format.md).
#include "weights/xlmr_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include <xxhash.h>

#include "engine/error.h"
#include "weights/file_io.h"

namespace xlmr {
namespace {

// Header field offsets (bytes from the start of the file).
enum : size_t {
  kOffVersion = 8,
  kOffHeaderSize = 12,
  kOffFileSize = 16,
  kOffJsonOffset = 24,
  kOffJsonSize = 32,
  kOffDirOffset = 40,
  kOffNTensors = 48,
  kOffDataOffset = 56,
  kOffDataSize = 64,
  kOffTokOffset = 72,
  kOffTokSize = 80,
  kOffTokChecksum = 88,
  kOffMetaChecksum = 96,  // XXH64 of header[0, 96) + JSON + directory
  kOffReserved = 104,
};

// Directory entry field offsets.
enum : size_t {
  kEntName = 0,  // 64 bytes, NUL-terminated and NUL-padded
  kEntDType = 64,
  kEntNDim = 68,
  kEntShape = 72,  // 4 x u64
  kEntOffset = 104,
  kEntNBytes = 112,
  kEntChecksum = 120,
};

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
uint32_t get_u32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | p[i];
  return v;
}
uint64_t get_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

uint64_t meta_checksum(const uint8_t* header, const void* json, size_t json_size, const void* dir,
                       size_t dir_size) {
  XXH64_state_t* st = XXH64_createState();
  XXH64_reset(st, 0);
  XXH64_update(st, header, kOffMetaChecksum);
  XXH64_update(st, json, json_size);
  XXH64_update(st, dir, dir_size);
  uint64_t h = XXH64_digest(st);
  XXH64_freeState(st);
  return h;
}

// a + b <= limit, without overflow.
bool fits(uint64_t a, uint64_t b, uint64_t limit) { return a <= limit && b <= limit - a; }

// PATH.tmp while it is being written: removed again unless renamed into
// place, so that a failure (a full disk, a producer's exception) leaves
// neither a partial file nor a stray temporary.
class TmpFile {
 public:
  explicit TmpFile(const std::string& path) : path_(path + ".tmp") {
    f_ = std::fopen(path_.c_str(), "wb");
    XLMR_CHECK(f_, "cannot create '" + path_ + "': " + std::strerror(errno));
  }
  ~TmpFile() {
    if (f_) std::fclose(f_);
    if (!renamed_) std::remove(path_.c_str());
  }
  TmpFile(const TmpFile&) = delete;
  TmpFile& operator=(const TmpFile&) = delete;

  uint64_t pos() const { return pos_; }
  void write(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f_) != n) failed();
    pos_ += n;
  }
  void pad_to(uint64_t target) {
    static const uint8_t zeros[kXlmrAlignment] = {0};
    while (pos_ < target) write(zeros, size_t(std::min<uint64_t>(target - pos_, kXlmrAlignment)));
  }
  void seek(uint64_t to) {
    if (::fseeko(f_, off_t(to), SEEK_SET) != 0) failed();
    pos_ = to;
  }
  void rename_to(const std::string& path) {
    FILE* f = f_;
    f_ = nullptr;
    if (std::fclose(f) != 0) failed();
    XLMR_CHECK(std::rename(path_.c_str(), path.c_str()) == 0,
               "cannot rename '" + path_ + "' to '" + path + "': " + std::strerror(errno));
    renamed_ = true;
  }

 private:
  [[noreturn]] void failed() { XLMR_THROW("failed writing '" + path_ + "' (disk full?)"); }

  std::string path_;
  FILE* f_ = nullptr;
  uint64_t pos_ = 0;
  bool renamed_ = false;
};

}  // namespace

void write_xlmr_file(const std::string& path, const nlohmann::json& config,
                     const std::vector<TensorToWrite>& tensors, const std::string& tokenizer_model) {
  const std::string json = config.dump();
  const uint64_t json_offset = kXlmrHeaderSize;
  const uint64_t dir_offset = align_up(json_offset + json.size(), 8);
  const uint64_t dir_size = uint64_t(tensors.size()) * kXlmrDirEntrySize;
  const uint64_t data_offset = align_up(dir_offset + dir_size, kXlmrAlignment);

  // The layout follows from names, shapes and dtypes alone, so the header and
  // directory can be written before any tensor's bytes exist; only the
  // checksums wait for the bytes (filled in below).
  std::vector<uint8_t> dir(dir_size, 0);
  std::set<std::string> names;
  uint64_t cursor = data_offset;
  std::vector<uint64_t> offsets, sizes;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorToWrite& t = tensors[i];
    XLMR_CHECK(!t.name.empty() && t.name.size() <= kXlmrMaxName,
               "tensor name '" + t.name + "' is empty or longer than 63 bytes");
    XLMR_CHECK(names.insert(t.name).second, "duplicate tensor name '" + t.name + "'");
    XLMR_CHECK(t.shape.size() >= 1 && t.shape.size() <= size_t(kXlmrMaxDims),
               "tensor '" + t.name + "' must have 1 to 4 dimensions");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      XLMR_CHECK(d > 0, "tensor '" + t.name + "' has a non-positive dimension");
      numel *= uint64_t(d);
    }
    const uint64_t nbytes = numel * dtype_size(t.dtype);
    XLMR_CHECK(t.produce || t.data.size() == nbytes,
               "tensor '" + t.name + "': data size does not match its shape and dtype");
    uint8_t* e = dir.data() + i * kXlmrDirEntrySize;
    std::memcpy(e + kEntName, t.name.data(), t.name.size());
    put_u32(e + kEntDType, uint32_t(t.dtype));
    put_u32(e + kEntNDim, uint32_t(t.shape.size()));
    for (size_t d = 0; d < t.shape.size(); ++d) put_u64(e + kEntShape + 8 * d, uint64_t(t.shape[d]));
    cursor = align_up(cursor, kXlmrAlignment);
    offsets.push_back(cursor);
    sizes.push_back(nbytes);
    put_u64(e + kEntOffset, cursor);
    put_u64(e + kEntNBytes, nbytes);
    cursor += nbytes;
  }
  const uint64_t data_end = align_up(cursor, kXlmrAlignment);
  const uint64_t tok_offset = data_end;
  const uint64_t file_size = tok_offset + tokenizer_model.size();

  uint8_t header[kXlmrHeaderSize] = {0};
  std::memcpy(header, kXlmrMagic, 8);
  put_u32(header + kOffVersion, kXlmrFormatVersion);
  put_u32(header + kOffHeaderSize, kXlmrHeaderSize);
  put_u64(header + kOffFileSize, file_size);
  put_u64(header + kOffJsonOffset, json_offset);
  put_u64(header + kOffJsonSize, json.size());
  put_u64(header + kOffDirOffset, dir_offset);
  put_u64(header + kOffNTensors, tensors.size());
  put_u64(header + kOffDataOffset, data_offset);
  put_u64(header + kOffDataSize, data_end - data_offset);
  put_u64(header + kOffTokOffset, tok_offset);
  put_u64(header + kOffTokSize, tokenizer_model.size());
  put_u64(header + kOffTokChecksum, XXH64(tokenizer_model.data(), tokenizer_model.size(), 0));

  TmpFile out(path);
  // Header and directory go out first without their checksums, to be
  // rewritten in place at the end: the file is the same, byte for byte, as
  // if everything had been in memory at once.
  out.write(header, sizeof header);
  out.write(json.data(), json.size());
  out.pad_to(dir_offset);
  out.write(dir.data(), dir.size());
  std::vector<uint8_t> buffer;  // a produced tensor's bytes, reused: the largest one's size
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorToWrite& t = tensors[i];
    const std::vector<uint8_t>* bytes = &t.data;
    if (t.produce) {
      if (buffer.capacity() < sizes[i]) {
        std::vector<uint8_t>().swap(buffer);  // not both the old and the new buffer at once
        buffer.reserve(size_t(sizes[i]));
      }
      buffer.clear();
      t.produce(buffer);
      XLMR_CHECK(buffer.size() == sizes[i], "tensor '" + t.name + "': produced " + std::to_string(buffer.size()) +
                                                " bytes, its shape and dtype need " + std::to_string(sizes[i]));
      bytes = &buffer;
    }
    out.pad_to(offsets[i]);
    out.write(bytes->data(), bytes->size());
    put_u64(dir.data() + i * kXlmrDirEntrySize + kEntChecksum, XXH64(bytes->data(), bytes->size(), 0));
  }
  out.pad_to(tok_offset);
  out.write(tokenizer_model.data(), tokenizer_model.size());
  XLMR_CHECK(out.pos() == file_size, "internal: wrote " + std::to_string(out.pos()) + " bytes of " +
                                         std::to_string(file_size));

  put_u64(header + kOffMetaChecksum, meta_checksum(header, json.data(), json.size(), dir.data(), dir.size()));
  out.seek(dir_offset);
  out.write(dir.data(), dir.size());
  out.seek(0);
  out.write(header, sizeof header);
  out.rename_to(path);
}

std::unique_ptr<XlmrFile> XlmrFile::open(const std::string& path, const LoadOptions& opts) {
  std::unique_ptr<XlmrFile> file(new XlmrFile());
  file->path_ = path;
  const std::string who = "'" + path + "'";

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  XLMR_CHECK(fd >= 0, "cannot open model file " + who + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    XLMR_THROW("model file " + who + " is not a regular file");
  }
  const uint64_t size = uint64_t(st.st_size);
  if (size < kXlmrHeaderSize) {
    ::close(fd);
    XLMR_THROW(who + " is not an .xlmr model file (only " + std::to_string(size) + " bytes)");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  XLMR_CHECK(map != MAP_FAILED, "cannot map " + who + ": " + std::strerror(errno));
  file->base_ = static_cast<const uint8_t*>(map);
  file->size_ = size;
  const uint8_t* b = file->base_;

  XLMR_CHECK(std::memcmp(b, kXlmrMagic, 8) == 0,
             who + " is not an .xlmr model file (bad magic; convert checkpoints with xlmr-convert)");
  file->version_ = get_u32(b + kOffVersion);
  XLMR_CHECK(file->version_ == kXlmrFormatVersion,
             who + " has format version " + std::to_string(file->version_) + ", this build reads version " +
                 std::to_string(kXlmrFormatVersion) + " (re-convert the checkpoint)");
  XLMR_CHECK(get_u32(b + kOffHeaderSize) == kXlmrHeaderSize, who + ": bad header size");
  const uint64_t file_size = get_u64(b + kOffFileSize);
  XLMR_CHECK(file_size == size, who + " is truncated or padded: header says " + std::to_string(file_size) +
                                    " bytes, file has " + std::to_string(size));
  for (size_t i = kOffReserved; i < kXlmrHeaderSize; ++i)
    XLMR_CHECK(b[i] == 0, who + ": reserved header bytes are not zero (corrupt header)");

  const uint64_t json_off = get_u64(b + kOffJsonOffset), json_size = get_u64(b + kOffJsonSize);
  const uint64_t dir_off = get_u64(b + kOffDirOffset), n = get_u64(b + kOffNTensors);
  const uint64_t data_off = get_u64(b + kOffDataOffset), data_size = get_u64(b + kOffDataSize);
  const uint64_t tok_off = get_u64(b + kOffTokOffset), tok_size = get_u64(b + kOffTokSize);
  XLMR_CHECK(json_off == kXlmrHeaderSize && fits(json_off, json_size, size), who + ": JSON section out of bounds");
  XLMR_CHECK(n <= 1000000 && dir_off >= json_off + json_size && fits(dir_off, n * kXlmrDirEntrySize, size),
             who + ": tensor directory out of bounds");
  XLMR_CHECK(data_off % kXlmrAlignment == 0 && data_off >= dir_off + n * kXlmrDirEntrySize &&
                 fits(data_off, data_size, size),
             who + ": data section out of bounds");
  XLMR_CHECK(tok_off >= data_off + data_size && fits(tok_off, tok_size, size) && tok_off + tok_size == size,
             who + ": tokenizer section out of bounds");

  const uint64_t want = get_u64(b + kOffMetaChecksum);
  XLMR_CHECK(meta_checksum(b, b + json_off, json_size, b + dir_off, n * kXlmrDirEntrySize) == want,
             who + ": header, config or tensor directory is corrupt (checksum mismatch)");
  XLMR_CHECK(XXH64(b + tok_off, tok_size, 0) == get_u64(b + kOffTokChecksum),
             who + ": tokenizer section is corrupt (checksum mismatch)");
  file->tok_offset_ = tok_off;
  file->tok_size_ = tok_size;

  try {
    file->config_ = nlohmann::json::parse(b + json_off, b + json_off + json_size);
  } catch (const std::exception& e) {
    XLMR_THROW(who + ": config JSON does not parse: " + detail::one_line(e.what()));
  }
  XLMR_CHECK(file->config_.is_object(), who + ": config JSON is not an object");

  std::set<std::string> names;
  file->tensors_.reserve(size_t(n));
  for (uint64_t i = 0; i < n; ++i) {
    const uint8_t* e = b + dir_off + i * kXlmrDirEntrySize;
    const char* name_p = reinterpret_cast<const char*>(e + kEntName);
    size_t len = strnlen(name_p, kXlmrMaxName + 1);
    XLMR_CHECK(len > 0 && len <= kXlmrMaxName, who + ": tensor directory entry " + std::to_string(i) + " has a bad name");
    TensorInfo t;
    t.name.assign(name_p, len);
    // Names come from the file: escaped, so a message stays one printable line.
    const std::string tw = who + ": tensor '" + detail::printable(t.name) + "'";
    XLMR_CHECK(names.insert(t.name).second, tw + " appears twice");
    const uint32_t dt = get_u32(e + kEntDType);
    XLMR_CHECK(dt <= uint32_t(DType::bf16), tw + " has unknown dtype code " + std::to_string(dt));
    t.dtype = DType(dt);
    const uint32_t ndim = get_u32(e + kEntNDim);
    XLMR_CHECK(ndim >= 1 && ndim <= uint32_t(kXlmrMaxDims), tw + " has " + std::to_string(ndim) + " dimensions");
    uint64_t numel = 1;
    for (uint32_t d = 0; d < ndim; ++d) {
      const uint64_t dim = get_u64(e + kEntShape + 8 * d);
      XLMR_CHECK(dim > 0 && dim <= (uint64_t(1) << 40) && numel <= (uint64_t(1) << 40) / dim,
                 tw + " has an impossible shape");
      numel *= dim;
      t.shape.push_back(int64_t(dim));
    }
    t.offset = get_u64(e + kEntOffset);
    t.nbytes = get_u64(e + kEntNBytes);
    t.checksum = get_u64(e + kEntChecksum);
    XLMR_CHECK(t.nbytes == numel * dtype_size(t.dtype), tw + ": byte size does not match shape and dtype");
    XLMR_CHECK(t.offset % kXlmrAlignment == 0 && t.offset >= data_off && fits(t.offset, t.nbytes, data_off + data_size),
               tw + " lies outside the data section or is misaligned");
    file->tensors_.push_back(std::move(t));
  }
  if (opts.verify_checksums) {
    for (const TensorInfo& t : file->tensors_)
      XLMR_CHECK(XXH64(b + t.offset, t.nbytes, 0) == t.checksum,
                 who + ": tensor '" + detail::printable(t.name) + "' is corrupt (checksum mismatch)");
  }
  return file;
}

XlmrFile::~XlmrFile() {
  if (base_) ::munmap(const_cast<uint8_t*>(base_), size_);
}

const TensorInfo* XlmrFile::find(const std::string& name) const {
  for (const TensorInfo& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

void XlmrFile::drop_pages(const TensorInfo& t) const {
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(base_ + t.offset), end = begin + t.nbytes;
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
  // Advice only: a failure changes nothing but the resident size.
  if (first < last) (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

std::string XlmrFile::tokenizer_model() const {
  return std::string(reinterpret_cast<const char*>(base_ + tok_offset_), size_t(tok_size_));
}

}  // namespace xlmr
