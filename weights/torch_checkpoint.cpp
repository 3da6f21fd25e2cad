// PyTorch checkpoint readers: the zip container written by torch.save since
// 1.6, and the older "legacy" stream (a run of pickles followed by the raw
// storages). Both share the restricted unpickler and the flattening of the
// unpickled object into named tensors plus metadata. Opening reads the
// pickle and locates and sizes every storage (zip directory, legacy element
// counts); a tensor's elements are read from its storage only when asked for
// (TorchView below).

#include <zip.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "weights/checkpoint.h"
#include "weights/file_io.h"
#include "weights/pickle.h"

namespace xlmr {

namespace {

using pickle::Kind;
using pickle::Value;

constexpr int64_t kMaxBytes = int64_t(1) << 62;
constexpr uint64_t kMaxPickleBytes = 1ull << 30;
constexpr size_t kMaxNameLength = 4096;
constexpr uint64_t kMaxWalkVisits = 4u << 20;
// A strided view may be larger than its storage (stride 0, overlaps); cap the
// copy so a hostile size cannot ask for unbounded memory.
constexpr uint64_t kMaxViewExpansionBytes = 256ull << 20;
// Several names may share one tensor or storage (tied weights), so the copies
// can add up to more than the stored data; but a small file naming one view
// thousands of times must not ask for unbounded memory. All tensors together
// may hold this many times the stored bytes, plus one view expansion.
constexpr uint64_t kMaxSharedCopies = 4;

// One storage (the bytes behind one or more tensors).
struct StorageEntry {
  std::string key;
  SrcDType dtype = SrcDType::f32;
  int64_t numel = 0;  // elements, as declared by the persistent id
};

struct StorageTable {
  std::vector<StorageEntry> entries;
  std::unordered_map<std::string, int64_t> by_key;
};

bool is_text(const Value* v) { return v->kind == Kind::string || v->kind == Kind::bytes; }

bool checked_mul(int64_t a, int64_t b, int64_t limit, int64_t* out) {
  if (a < 0 || b < 0) return false;
  if (a != 0 && b > limit / a) return false;
  *out = a * b;
  return true;
}

// Registers (or finds) the storage named by a persistent id's common fields:
// ('storage', <storage class>, key, location, numel, ...).
int64_t register_storage(pickle::Unpickler& up, StorageTable& table, Value* pid, size_t expected_len,
                         SrcDType* dtype_out, int64_t* numel_out) {
  if (pid->kind != Kind::tuple) up.fail(std::string("persistent id is a ") + pickle::kind_name(pid->kind) + ", not a tuple");
  const auto& it = pid->items;
  if (it.empty() || !is_text(it[0])) up.fail("persistent id has no type name");
  if (it[0]->str != "storage") up.fail("unsupported persistent id type '" + detail::printable(it[0]->str, 64) + "'");
  if (it.size() != expected_len) {
    up.fail("storage persistent id has " + std::to_string(it.size()) + " fields, expected " + std::to_string(expected_len));
  }
  if (it[1]->kind != Kind::global || it[1]->global != pickle::GlobalId::storage_class) {
    up.fail("storage persistent id does not name a storage class");
  }
  if (!is_text(it[2])) up.fail("storage persistent id key is not a string");
  if (!is_text(it[3])) up.fail("storage persistent id location is not a string");
  if (it[4]->kind != Kind::integer || it[4]->i < 0) up.fail("storage persistent id size is not a non-negative int");
  const SrcDType dtype = it[1]->storage_dtype;
  const int64_t numel = it[4]->i;
  int64_t nbytes;
  if (!checked_mul(numel, static_cast<int64_t>(dtype_size(dtype)), kMaxBytes, &nbytes)) {
    up.fail("storage '" + detail::printable(it[2]->str, 64) + "' size overflows");
  }
  const std::string& key = it[2]->str;
  auto found = table.by_key.find(key);
  int64_t id;
  if (found != table.by_key.end()) {
    id = found->second;
    const StorageEntry& e = table.entries[static_cast<size_t>(id)];
    if (e.dtype != dtype || e.numel != numel) {
      up.fail("storage '" + detail::printable(key, 64) + "' is declared twice with different types or sizes");
    }
  } else {
    id = static_cast<int64_t>(table.entries.size());
    StorageEntry e;
    e.key = key;
    e.dtype = dtype;
    e.numel = numel;
    table.entries.push_back(std::move(e));
    table.by_key.emplace(key, id);
  }
  *dtype_out = dtype;
  *numel_out = numel;
  return id;
}

// ---- flattening -------------------------------------------------------------

struct Flattener {
  std::string path;
  std::vector<std::pair<std::string, const Value*>> tensors;
  std::unordered_set<std::string> names;
  uint64_t visits = 0;

  void visit(int depth) {
    if (depth > pickle::kMaxWalkDepth) {
      XLMR_THROW(path + ": checkpoint object nests deeper than " + std::to_string(pickle::kMaxWalkDepth) + " levels");
    }
    if (++visits > kMaxWalkVisits) XLMR_THROW(path + ": checkpoint object graph is too large to walk");
  }

  static bool is_scalar(const Value* v) {
    return v->kind == Kind::none || v->kind == Kind::boolean || v->kind == Kind::integer ||
           v->kind == Kind::floating || v->kind == Kind::string;
  }

  static nlohmann::json scalar_json(const Value* v) {
    switch (v->kind) {
      case Kind::boolean: return v->b;
      case Kind::integer: return v->i;
      case Kind::floating: return v->f;
      case Kind::string: return v->str;
      default: return nullptr;
    }
  }

  bool contains_tensor(const Value* v, int depth) {
    visit(depth);
    switch (v->kind) {
      case Kind::tensor: return true;
      case Kind::tuple:
      case Kind::list:
        for (const Value* e : v->items) {
          if (contains_tensor(e, depth + 1)) return true;
        }
        return false;
      case Kind::dict:
      case Kind::object:
        for (const auto& kv : v->dict->entries) {
          if (contains_tensor(kv.second, depth + 1)) return true;
        }
        return false;
      default: return false;
    }
  }

  std::string join(const std::string& prefix, const std::string& key) {
    std::string name = prefix.empty() ? key : prefix + "." + key;
    if (name.size() > kMaxNameLength) XLMR_THROW(path + ": checkpoint entry name longer than 4096 characters");
    return name;
  }

  std::optional<nlohmann::json> walk(const Value* v, const std::string& prefix, int depth) {
    visit(depth);
    switch (v->kind) {
      case Kind::tensor: {
        if (depth == 0) XLMR_THROW(path + ": checkpoint holds a single tensor, not a state dict");
        if (prefix.empty()) XLMR_THROW(path + ": checkpoint has a tensor with an empty name");
        if (!names.insert(prefix).second) XLMR_THROW(path + ": duplicate tensor name '" + detail::printable(prefix) + "'");
        tensors.emplace_back(prefix, v);
        return std::nullopt;
      }
      case Kind::dict:
      case Kind::object: {
        nlohmann::json obj = nlohmann::json::object();
        for (const auto& kv : v->dict->entries) {
          std::string key;
          if (kv.first->kind == Kind::string) {
            key = kv.first->str;
          } else if (kv.first->kind == Kind::integer) {
            key = std::to_string(kv.first->i);
          } else {
            if (contains_tensor(kv.second, depth + 1)) {
              XLMR_THROW(path + ": checkpoint has tensors under a " + pickle::kind_name(kv.first->kind) +
                         " dict key at '" + detail::printable(prefix) + "'");
            }
            continue;
          }
          std::optional<nlohmann::json> child = walk(kv.second, join(prefix, key), depth + 1);
          if (child) obj[key] = std::move(*child);
        }
        if (obj.empty()) return std::nullopt;
        return obj;
      }
      case Kind::tuple:
      case Kind::list: {
        bool all_scalar = std::all_of(v->items.begin(), v->items.end(), is_scalar);
        if (all_scalar) {
          nlohmann::json arr = nlohmann::json::array();
          for (const Value* e : v->items) arr.push_back(scalar_json(e));
          return arr;
        }
        nlohmann::json obj = nlohmann::json::object();
        for (size_t k = 0; k < v->items.size(); ++k) {
          std::string key = std::to_string(k);
          std::optional<nlohmann::json> child = walk(v->items[k], join(prefix, key), depth + 1);
          if (child) obj[key] = std::move(*child);
        }
        if (obj.empty()) return std::nullopt;
        return obj;
      }
      case Kind::none:
      case Kind::boolean:
      case Kind::integer:
      case Kind::floating:
      case Kind::string:
        return scalar_json(v);
      default:
        return std::nullopt;  // big ints, bytes, globals, bare storages: not informative
    }
  }
};

// ---- tensors as views into storages -----------------------------------------

// The storages' raw bytes, where the container keeps them: zip members, or
// ranges of a legacy file. Each storage's declared size was checked against
// what the file holds when the checkpoint was opened; read() checks the range
// against it again.
class StorageFile {
 public:
  virtual ~StorageFile() = default;
  // Reads n bytes at byte `offset` of storage `id`.
  virtual void read(int64_t id, uint64_t offset, uint8_t* dst, uint64_t n) = 0;
};

// A tensor: sizes and strides (elements, never negative) from `first`, an
// element of its root storage. Opening checked that every element it reaches
// lies inside that storage.
class TorchView : public TensorBytes {
 public:
  TorchView(std::shared_ptr<StorageFile> storages, std::string what, int64_t storage, int64_t first,
            const pickle::TensorRef& tr, int64_t esize, int64_t span)
      : storages_(std::move(storages)), what_(std::move(what)), storage_(storage), first_(first), sizes_(tr.sizes),
        strides_(tr.strides), esize_(esize), span_(span) {
    int64_t expect = 1;
    for (size_t k = sizes_.size(); k-- > 0;) {
      if (sizes_[k] != 1 && strides_[k] != expect) contiguous_ = false;
      expect *= sizes_[k];
    }
  }

  void read(uint8_t* dst, uint64_t nbytes) const override {
    int64_t numel = 1;
    for (int64_t d : sizes_) numel *= d;  // checked for overflow when opened
    if (nbytes != static_cast<uint64_t>(numel * esize_)) XLMR_THROW(what_ + ": internal: size changed since opened");
    if (numel == 0) return;
    const uint64_t at = static_cast<uint64_t>(first_ * esize_);
    if (contiguous_) {
      storages_->read(storage_, at, dst, nbytes);
      return;
    }
    // A strided view (a transpose, a column slice, a broadcast): read the
    // elements it reaches, at most its storage, and gather them.
    std::vector<uint8_t> span(static_cast<size_t>(span_ * esize_));
    storages_->read(storage_, at, span.data(), span.size());
    const uint8_t* base = span.data();
    const size_t ndim = sizes_.size();  // >= 1: a 0-d tensor is contiguous
    const int64_t inner_n = sizes_[ndim - 1];
    const int64_t inner_s = strides_[ndim - 1];
    std::vector<int64_t> idx(ndim, 0);
    while (true) {
      int64_t off = 0;
      for (size_t k = 0; k + 1 < ndim; ++k) off += idx[k] * strides_[k];
      const uint8_t* src = base + off * esize_;
      if (inner_s == 1) {
        std::memcpy(dst, src, static_cast<size_t>(inner_n * esize_));
        dst += inner_n * esize_;
      } else {
        for (int64_t j = 0; j < inner_n; ++j) {
          std::memcpy(dst, src + j * inner_s * esize_, static_cast<size_t>(esize_));
          dst += esize_;
        }
      }
      size_t k = ndim - 1;
      bool done = true;
      while (k-- > 0) {
        if (++idx[k] < sizes_[k]) {
          done = false;
          break;
        }
        idx[k] = 0;
      }
      if (done) break;
    }
  }

 private:
  std::shared_ptr<StorageFile> storages_;
  std::string what_;  // "<path>: tensor '<name>'", for messages
  int64_t storage_, first_;
  std::vector<int64_t> sizes_, strides_;
  int64_t esize_;
  int64_t span_;  // elements from first_ to the last one reached, inclusive
  bool contiguous_ = true;
};

// Checks one tensor against its storage and describes it; reads nothing.
// `budget`: bytes all tensors still to be described may hold, or read,
// together.
SourceTensor describe(const std::string& path, const std::string& name, const Value* tv, const StorageTable& table,
                      const std::shared_ptr<StorageFile>& storages, uint64_t* budget) {
  const pickle::TensorRef& tr = *tv->tensor;
  const pickle::StorageRef& sr = *tr.storage->storage;
  const std::string what = path + ": tensor '" + detail::printable(name) + "'";
  if (sr.id < 0 || static_cast<size_t>(sr.id) >= table.entries.size()) XLMR_THROW(what + " refers to an unknown storage");
  const StorageEntry& root = table.entries[static_cast<size_t>(sr.id)];
  const int64_t esize = static_cast<int64_t>(dtype_size(sr.dtype));

  SourceTensor t;
  t.name = name;
  t.dtype = sr.dtype;
  t.shape = tr.sizes;
  const size_t ndim = tr.sizes.size();

  int64_t numel = 1;
  bool empty = false;
  for (int64_t d : tr.sizes) {
    if (d == 0) empty = true;
  }
  int64_t max_index = tr.offset;
  if (empty) {
    numel = 0;
  } else {
    for (size_t k = 0; k < ndim; ++k) {
      if (!checked_mul(numel, tr.sizes[k], kMaxBytes / esize, &numel)) XLMR_THROW(what + " has an overflowing shape");
      int64_t span;
      if (!checked_mul(tr.sizes[k] - 1, tr.strides[k], kMaxBytes, &span) || span > kMaxBytes - max_index) {
        XLMR_THROW(what + " has overflowing strides");
      }
      max_index += span;
    }
    if (max_index >= sr.numel) {
      XLMR_THROW(what + " reaches element " + std::to_string(max_index) + " of a storage with " +
                 std::to_string(sr.numel) + " elements");
    }
    // The (view) storage lies inside its root, whose size the file was
    // checked to hold: so does every element the tensor reaches.
    if (sr.offset < 0 || sr.numel > root.numel || sr.offset > root.numel - sr.numel) {
      XLMR_THROW(what + " storage data is shorter than declared");
    }
    const uint64_t out_bytes = static_cast<uint64_t>(numel) * static_cast<uint64_t>(esize);
    const uint64_t storage_bytes = static_cast<uint64_t>(sr.numel) * static_cast<uint64_t>(esize);
    if (out_bytes > std::max(storage_bytes, kMaxViewExpansionBytes)) {
      XLMR_THROW(what + " expands its storage to an implausible size");
    }
    // Reading a strided view reads every element between its first and last
    // (TorchView), which for a sparse slice is more than it holds: charge
    // that too, so that reading all tensors costs a bounded multiple of the
    // stored bytes even when a small file names one wide view many times.
    const uint64_t span_bytes = static_cast<uint64_t>(max_index - tr.offset + 1) * static_cast<uint64_t>(esize);
    const uint64_t cost = std::max(out_bytes, span_bytes);
    if (cost > *budget) {
      XLMR_THROW(what + ": the tensors add up to far more bytes than the checkpoint stores "
                        "(one storage shared by too many names or views)");
    }
    *budget -= cost;
  }
  const int64_t first = empty ? 0 : sr.offset + tr.offset;
  const int64_t span = empty ? 0 : max_index - tr.offset + 1;
  t.bytes = std::make_shared<TorchView>(storages, what, sr.id, first, tr, esize, span);
  return t;
}

Checkpoint finish(const std::string& path, const char* format, const Value* root, const StorageTable& table,
                  const std::shared_ptr<StorageFile>& storages) {
  Flattener fl;
  fl.path = path;
  std::optional<nlohmann::json> meta = fl.walk(root, "", 0);
  Checkpoint ck;
  ck.format = format;
  if (meta && meta->is_object()) ck.metadata = std::move(*meta);
  // Declared storage bytes, each checked against the file at registration;
  // capped well below where the product with kMaxSharedCopies would wrap.
  // Nothing is copied any more when the checkpoint is opened, but a consumer
  // reading every tensor still would: the same limit keeps that bounded.
  uint64_t stored = 0;
  for (const StorageEntry& e : table.entries) {
    stored = std::min<uint64_t>(stored + static_cast<uint64_t>(e.numel) * dtype_size(e.dtype), uint64_t(1) << 60);
  }
  uint64_t budget = stored * kMaxSharedCopies + kMaxViewExpansionBytes;
  ck.tensors.reserve(fl.tensors.size());
  for (auto& nt : fl.tensors) ck.tensors.push_back(describe(path, nt.first, nt.second, table, storages, &budget));
  return ck;
}

// ---- zip ------------------------------------------------------------------

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};
struct ZipFileCloser {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};

std::string zip_error_text(int code) {
  zip_error_t err;
  zip_error_init_with_code(&err, code);
  std::string s = zip_error_strerror(&err);
  zip_error_fini(&err);
  return s;
}

class ZipArchive {
 public:
  ZipArchive(const std::string& path, uint64_t file_size) : path_(path), file_size_(file_size) {
    int code = 0;
    zip_t* z = zip_open(path.c_str(), ZIP_RDONLY, &code);
    if (!z) XLMR_THROW(path + ": cannot open as a zip archive (" + zip_error_text(code) + ")");
    z_.reset(z);
  }

  zip_t* get() const { return z_.get(); }
  const std::string& path() const { return path_; }

  // Index of the entry with exactly this name, or -1. Names are compared as
  // stored (raw bytes), like the listing that found <root>.
  zip_int64_t find(const std::string& name) const { return zip_name_locate(z_.get(), name.c_str(), ZIP_FL_ENC_RAW); }

  // Size of an entry's uncompressed data, checked against what its
  // compressed form could plausibly expand to. *stored: whether the data is
  // kept uncompressed (torch.save does), so that a read can seek into it.
  uint64_t entry_size(zip_int64_t idx, const std::string& name, bool* stored_out = nullptr) const {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(z_.get(), static_cast<zip_uint64_t>(idx), 0, &st) != 0) {
      XLMR_THROW(path_ + ": cannot stat zip entry '" + detail::printable(name) + "' (" + zip_strerror(z_.get()) + ")");
    }
    if (!(st.valid & ZIP_STAT_SIZE) || !(st.valid & ZIP_STAT_COMP_SIZE)) {
      XLMR_THROW(path_ + ": zip entry '" + detail::printable(name) + "' has no recorded size");
    }
    if (st.comp_size > file_size_) XLMR_THROW(path_ + ": zip entry '" + detail::printable(name) + "' is larger than the archive (truncated?)");
    const bool stored = (st.valid & ZIP_STAT_COMP_METHOD) && st.comp_method == ZIP_CM_STORE;
    if (stored ? st.size != st.comp_size : st.size / 1100 > st.comp_size + 1024) {
      XLMR_THROW(path_ + ": zip entry '" + detail::printable(name) + "' has an implausible size");
    }
    if (stored_out) *stored_out = stored;
    return st.size;
  }

  // Reads n bytes of an entry's data from byte `offset`. A stored entry is
  // seeked into; compressed data can only be decoded from its start, so the
  // bytes before `offset` are decoded and dropped.
  void read(zip_int64_t idx, const std::string& name, uint64_t offset, uint8_t* dst, uint64_t n, bool stored) const {
    zip_file_t* f = zip_fopen_index(z_.get(), static_cast<zip_uint64_t>(idx), 0);
    if (!f) XLMR_THROW(path_ + ": cannot open zip entry '" + detail::printable(name) + "' (" + zip_strerror(z_.get()) + ")");
    std::unique_ptr<zip_file_t, ZipFileCloser> fh(f);
    if (offset > 0 && stored) {
      if (zip_fseek(f, static_cast<zip_int64_t>(offset), SEEK_SET) != 0) {
        XLMR_THROW(path_ + ": cannot seek in zip entry '" + detail::printable(name) + "' (" + zip_file_strerror(f) +
                   ")");
      }
    } else if (offset > 0) {
      std::vector<uint8_t> skip(static_cast<size_t>(std::min<uint64_t>(offset, 1u << 20)));
      for (uint64_t left = offset; left > 0;) {
        const uint64_t chunk = std::min<uint64_t>(left, skip.size());
        read_fully(f, name, skip.data(), chunk);
        left -= chunk;
      }
    }
    read_fully(f, name, dst, n);
  }

 private:
  void read_fully(zip_file_t* f, const std::string& name, uint8_t* dst, uint64_t n) const {
    uint64_t got = 0;
    while (got < n) {
      const uint64_t chunk = std::min<uint64_t>(n - got, 1u << 30);
      zip_int64_t r = zip_fread(f, dst + got, chunk);
      if (r < 0) XLMR_THROW(path_ + ": cannot read zip entry '" + detail::printable(name) + "' (" + zip_file_strerror(f) + ")");
      if (r == 0) XLMR_THROW(path_ + ": zip entry '" + detail::printable(name) + "' is truncated");
      got += static_cast<uint64_t>(r);
    }
  }

  std::string path_;
  uint64_t file_size_;
  std::unique_ptr<zip_t, ZipCloser> z_;
};

// The storages of a zip checkpoint: members <root>/data/<key>, kept open in
// the archive (libzip holds the file) until the last tensor is gone.
class ZipStorages : public StorageFile {
 public:
  struct Member {
    zip_int64_t index = -1;
    std::string name;
    uint64_t bytes = 0;  // declared by the pickle; the member holds at least this many
    bool stored = false;
  };

  explicit ZipStorages(std::shared_ptr<ZipArchive> zip) : zip_(std::move(zip)) {}
  void add(int64_t id, Member m) { members_.emplace(id, std::move(m)); }
  bool has(int64_t id) const { return members_.count(id) > 0; }

  void read(int64_t id, uint64_t offset, uint8_t* dst, uint64_t n) override {
    auto it = members_.find(id);
    if (it == members_.end()) {
      XLMR_THROW(path() + ": internal: storage " + std::to_string(id) + " was not registered");
    }
    const Member& m = it->second;
    if (offset > m.bytes || n > m.bytes - offset) {
      XLMR_THROW(path() + ": read past the end of storage record '" + detail::printable(m.name) + "'");
    }
    zip_->read(m.index, m.name, offset, dst, n, m.stored);
  }

 private:
  const std::string& path() const { return zip_->path(); }
  std::shared_ptr<ZipArchive> zip_;
  std::unordered_map<int64_t, Member> members_;
};

Checkpoint read_torch_zip(const std::string& path) {
  uint64_t file_size;
  {
    detail::InputFile f(path);
    file_size = f.size();
  }
  auto shared_zip = std::make_shared<ZipArchive>(path, file_size);
  ZipArchive& zip = *shared_zip;

  // <root> is the single top-level folder holding data.pkl.
  const zip_int64_t count = zip_get_num_entries(zip.get(), 0);
  if (count < 0) XLMR_THROW(path + ": cannot list the zip archive");
  std::string root;
  for (zip_int64_t i = 0; i < count; ++i) {
    const char* nm = zip_get_name(zip.get(), static_cast<zip_uint64_t>(i), ZIP_FL_ENC_RAW);
    if (!nm) continue;
    std::string s(nm);
    const std::string tail = "/data.pkl";
    if (s.size() <= tail.size() || s.compare(s.size() - tail.size(), tail.size(), tail) != 0) continue;
    std::string r = s.substr(0, s.size() - tail.size());
    if (r.find('/') != std::string::npos) continue;
    if (!root.empty() && r != root) {
      XLMR_THROW(path + ": zip archive is ambiguous (both '" + detail::printable(root) + "/data.pkl' and '" + detail::printable(s) + "')");
    }
    root = r;
  }
  if (root.empty()) XLMR_THROW(path + ": zip archive has no <root>/data.pkl (not a PyTorch checkpoint)");

  const zip_int64_t bo = zip.find(root + "/byteorder");
  if (bo >= 0) {
    const uint64_t n = zip.entry_size(bo, root + "/byteorder");
    if (n > 64) XLMR_THROW(path + ": byteorder record is too long");
    std::string s(static_cast<size_t>(n), '\0');
    zip.read(bo, root + "/byteorder", 0, reinterpret_cast<uint8_t*>(s.data()), n, false);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
    if (s != "little") XLMR_THROW(path + ": checkpoint byte order is '" + detail::printable(s, 16) + "'; only little-endian is supported");
  }

  const std::string pkl_name = root + "/data.pkl";
  const zip_int64_t pkl_idx = zip.find(pkl_name);
  if (pkl_idx < 0) XLMR_THROW(path + ": cannot locate " + detail::printable(pkl_name));
  const uint64_t pkl_size = zip.entry_size(pkl_idx, pkl_name);
  if (pkl_size > kMaxPickleBytes) XLMR_THROW(path + ": " + detail::printable(pkl_name) + " is larger than 1 GiB");
  std::vector<uint8_t> pkl(static_cast<size_t>(pkl_size));
  zip.read(pkl_idx, pkl_name, 0, pkl.data(), pkl_size, false);

  StorageTable table;
  auto storages = std::make_shared<ZipStorages>(shared_zip);
  pickle::Unpickler up(pkl.data(), pkl.size(), path + ": " + detail::printable(pkl_name));  // prefixes its messages
  up.set_persistent_load([&](pickle::Unpickler& u, Value* pid) -> Value* {
    SrcDType dtype;
    int64_t numel;
    const int64_t id = register_storage(u, table, pid, 5, &dtype, &numel);
    if (!storages->has(id)) {
      // Located and sized now, from the zip directory; read when a tensor is.
      ZipStorages::Member m;
      m.name = root + "/data/" + table.entries[static_cast<size_t>(id)].key;
      m.index = zip.find(m.name);
      if (m.index < 0) {
        XLMR_THROW(path + ": storage record '" + detail::printable(m.name) + "' is missing from the archive");
      }
      const uint64_t have = zip.entry_size(m.index, m.name, &m.stored);
      m.bytes = static_cast<uint64_t>(numel) * dtype_size(dtype);
      if (have < m.bytes) {
        XLMR_THROW(path + ": storage record '" + detail::printable(m.name) + "' holds " + std::to_string(have) +
                   " bytes, needs " + std::to_string(m.bytes));
      }
      storages->add(id, std::move(m));
    }
    Value* s = u.make(Kind::storage);
    s->storage->id = id;
    s->storage->dtype = dtype;
    s->storage->offset = 0;
    s->storage->numel = numel;
    return s;
  });
  size_t offset = 0;
  const Value* obj = up.load(&offset);
  return finish(path, "torch-zip", obj, table, storages);
}

// ---- legacy ---------------------------------------------------------------

const uint8_t kLegacyMagic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

// The storages of a legacy file: each one's raw elements at a known offset,
// after its 8-byte element count.
class LegacyStorages : public StorageFile {
 public:
  explicit LegacyStorages(std::shared_ptr<detail::InputFile> file) : file_(std::move(file)) {}
  void add(int64_t id, uint64_t offset, uint64_t bytes) { ranges_[id] = {offset, bytes}; }
  bool has(int64_t id) const { return ranges_.count(id) > 0; }

  void read(int64_t id, uint64_t offset, uint8_t* dst, uint64_t n) override {
    auto it = ranges_.find(id);
    if (it == ranges_.end()) {
      XLMR_THROW(file_->path() + ": internal: storage " + std::to_string(id) + " was not located");
    }
    if (offset > it->second.second || n > it->second.second - offset) {
      XLMR_THROW(file_->path() + ": internal: read past the end of a storage");
    }
    file_->read_at(it->second.first + offset, dst, n);
  }

 private:
  std::shared_ptr<detail::InputFile> file_;
  std::unordered_map<int64_t, std::pair<uint64_t, uint64_t>> ranges_;  // id -> (file offset, declared bytes)
};

Checkpoint read_torch_legacy(const std::string& path) {
  auto shared_file = std::make_shared<detail::InputFile>(path);
  detail::InputFile& file = *shared_file;
  const uint64_t fsize = file.size();

  // The pickles come first and their total length is unknown: parse from a
  // prefix of the file, growing it while the parser runs out of input.
  uint64_t prefix = std::min<uint64_t>(fsize, 1u << 20);
  while (true) {
    std::vector<uint8_t> buf(static_cast<size_t>(prefix));
    file.read_at(0, buf.data(), prefix);
    StorageTable table;
    pickle::Unpickler up(buf.data(), buf.size(), path);
    try {
      size_t off = 0;
      const Value* magic = up.load(&off);
      if (magic->kind != Kind::bigint || magic->str.size() != sizeof(kLegacyMagic) ||
          std::memcmp(magic->str.data(), kLegacyMagic, sizeof(kLegacyMagic)) != 0) {
        XLMR_THROW(path + ": legacy torch file has a wrong magic number");
      }
      const Value* proto = up.load(&off);
      if (proto->kind != Kind::integer || proto->i != 1001) {
        XLMR_THROW(path + ": legacy torch file has an unsupported protocol version");
      }
      const Value* sys_info = up.load(&off);
      if (sys_info->kind != Kind::dict) XLMR_THROW(path + ": legacy torch file has no system-info record");
      if (const Value* le = pickle::dict_get(sys_info, "little_endian")) {
        if (le->kind == Kind::boolean && !le->b) {
          XLMR_THROW(path + ": legacy torch file is big-endian; only little-endian is supported");
        }
      }
      up.set_persistent_load([&](pickle::Unpickler& u, Value* pid) -> Value* {
        SrcDType dtype;
        int64_t numel;
        const int64_t id = register_storage(u, table, pid, 6, &dtype, &numel);
        int64_t view_offset = 0, view_numel = numel;
        const Value* view = pid->items[5];
        if (view->kind == Kind::tuple) {
          if (view->items.size() != 3 || view->items[1]->kind != Kind::integer ||
              view->items[2]->kind != Kind::integer) {
            u.fail("storage view metadata is malformed");
          }
          view_offset = view->items[1]->i;
          view_numel = view->items[2]->i;
          if (view_offset < 0 || view_numel < 0 || view_offset > numel || view_numel > numel - view_offset) {
            u.fail("storage view lies outside its storage");
          }
        } else if (view->kind != Kind::none) {
          u.fail("storage view metadata is malformed");
        }
        Value* s = u.make(Kind::storage);
        s->storage->id = id;
        s->storage->dtype = dtype;
        s->storage->offset = view_offset;
        s->storage->numel = view_numel;
        return s;
      });
      const Value* obj = up.load(&off);
      up.set_persistent_load(nullptr);
      const Value* keys = up.load(&off);
      if (keys->kind != Kind::list && keys->kind != Kind::tuple) {
        XLMR_THROW(path + ": legacy torch file has no storage key list");
      }

      // Raw storages follow, in the order of the key list, each after its
      // element count: the counts are read and checked now, the elements
      // skipped until a tensor is read.
      auto storages = std::make_shared<LegacyStorages>(shared_file);
      uint64_t pos = off;
      std::unordered_set<std::string> seen;
      for (const Value* k : keys->items) {
        if (!is_text(k)) XLMR_THROW(path + ": legacy storage key is not a string");
        auto found = table.by_key.find(k->str);
        if (found == table.by_key.end()) {
          XLMR_THROW(path + ": legacy storage '" + detail::printable(k->str, 64) + "' is not used by any tensor");
        }
        if (!seen.insert(k->str).second) XLMR_THROW(path + ": legacy storage '" + detail::printable(k->str, 64) + "' is listed twice");
        const StorageEntry& e = table.entries[static_cast<size_t>(found->second)];
        uint8_t cnt[8];
        file.read_at(pos, cnt, 8);
        pos += 8;
        const uint64_t count = detail::load_le64(cnt);
        const uint64_t esize = dtype_size(e.dtype);
        if (count > (fsize - pos) / esize) {
          XLMR_THROW(path + ": legacy storage '" + detail::printable(e.key, 64) + "' runs past the end of the file (truncated?)");
        }
        if (count < static_cast<uint64_t>(e.numel)) {
          XLMR_THROW(path + ": legacy storage '" + detail::printable(e.key, 64) + "' holds " + std::to_string(count) + " elements, needs " +
                     std::to_string(e.numel));
        }
        storages->add(found->second, pos, static_cast<uint64_t>(e.numel) * esize);
        pos += count * esize;
      }
      // Every storage the pickle declared must have its data here: the size
      // budget in finish() counts them all.
      for (size_t id = 0; id < table.entries.size(); ++id) {
        if (!storages->has(static_cast<int64_t>(id))) {
          XLMR_THROW(path + ": legacy storage '" + detail::printable(table.entries[id].key, 64) +
                     "' has no data (missing from the storage list)");
        }
      }
      return finish(path, "torch-legacy", obj, table, storages);
    } catch (const Error&) {
      if (up.ran_out_of_input() && prefix < fsize && prefix < kMaxPickleBytes) {
        prefix = std::min<uint64_t>(fsize, prefix * 4);
        continue;
      }
      throw;
    }
  }
}

}  // namespace

Checkpoint read_torch_checkpoint(const std::string& path) {
  switch (sniff_checkpoint(path)) {
    case SourceKind::torch_zip: return read_torch_zip(path);
    case SourceKind::torch_legacy: return read_torch_legacy(path);
    default: XLMR_THROW(path + ": not a PyTorch checkpoint (neither a torch.save zip archive nor a legacy torch file)");
  }
}

}  // namespace xlmr
