// safetensors reader: u64 LE header length, JSON header, raw data buffer.

#include <algorithm>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "weights/checkpoint.h"
#include "weights/file_io.h"

namespace xlmr {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
constexpr int kMaxJsonDepth = 64;
constexpr uint64_t kMaxBytes = uint64_t(1) << 62;

bool parse_st_dtype(const std::string& s, SrcDType* out) {
  static const struct {
    const char* name;
    SrcDType dtype;
  } table[] = {
      {"F32", SrcDType::f32}, {"F16", SrcDType::f16}, {"BF16", SrcDType::bf16}, {"F64", SrcDType::f64},
      {"I64", SrcDType::i64}, {"I32", SrcDType::i32}, {"I16", SrcDType::i16},   {"I8", SrcDType::i8},
      {"U8", SrcDType::u8},   {"BOOL", SrcDType::boolean},
  };
  for (const auto& e : table) {
    if (s == e.name) {
      *out = e.dtype;
      return true;
    }
  }
  return false;
}

bool get_u64(const nlohmann::ordered_json& j, uint64_t* out) {
  if (!j.is_number_unsigned()) {
    if (j.is_number_integer() && j.get<int64_t>() >= 0) {
      *out = static_cast<uint64_t>(j.get<int64_t>());
      return true;
    }
    return false;
  }
  *out = j.get<uint64_t>();
  return true;
}

struct Entry {
  size_t order;
  uint64_t begin, end;
};

// One tensor's bytes: a range of the file, checked against the file's size
// when the header was read (and by InputFile again when read).
class FileRange : public TensorBytes {
 public:
  FileRange(std::shared_ptr<detail::InputFile> file, uint64_t offset, uint64_t size)
      : file_(std::move(file)), offset_(offset), size_(size) {}
  void read(uint8_t* dst, uint64_t nbytes) const override {
    if (nbytes != size_) XLMR_THROW(file_->path() + ": internal: tensor size changed since the header was read");
    file_->read_at(offset_, dst, nbytes);
  }

 private:
  std::shared_ptr<detail::InputFile> file_;
  uint64_t offset_, size_;
};

}  // namespace

Checkpoint read_safetensors(const std::string& path) {
  auto shared_file = std::make_shared<detail::InputFile>(path);
  detail::InputFile& file = *shared_file;
  const uint64_t fsize = file.size();
  if (fsize < 8) XLMR_THROW(path + ": safetensors file too short (" + std::to_string(fsize) + " bytes)");
  uint8_t lenbuf[8];
  file.read_at(0, lenbuf, 8);
  const uint64_t n = detail::load_le64(lenbuf);
  if (n > kMaxHeaderBytes) {
    XLMR_THROW(path + ": safetensors header length " + std::to_string(n) + " is implausible (limit 100 MB)");
  }
  if (n > fsize - 8) {
    XLMR_THROW(path + ": safetensors header length " + std::to_string(n) + " exceeds the file size (" +
               std::to_string(fsize) + " bytes)");
  }
  std::string text(static_cast<size_t>(n), '\0');
  file.read_at(8, text.data(), n);

  // Parse, keeping the header's order and catching duplicate keys at any level.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  bool too_deep = false;
  nlohmann::ordered_json::parser_callback_t cb = [&](int depth, nlohmann::ordered_json::parse_event_t ev,
                                                     nlohmann::ordered_json& parsed) -> bool {
    using E = nlohmann::ordered_json::parse_event_t;
    if (depth > kMaxJsonDepth) too_deep = true;
    if (ev == E::object_start) {
      open_objects.emplace_back();
    } else if (ev == E::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (ev == E::key && !open_objects.empty() && parsed.is_string()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(k).second && duplicate.empty()) duplicate = k.empty() ? "(empty)" : detail::printable(k);
    }
    return true;
  };
  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true);
  } catch (const nlohmann::json::exception& e) {
    // The parser quotes the bytes it stopped at: escape them.
    XLMR_THROW(path + ": safetensors header is not valid JSON (" + detail::one_line(e.what()) + ")");
  }
  if (too_deep) XLMR_THROW(path + ": safetensors header nests deeper than " + std::to_string(kMaxJsonDepth));
  if (!duplicate.empty()) XLMR_THROW(path + ": safetensors header has duplicate name '" + duplicate + "'");
  if (!header.is_object()) XLMR_THROW(path + ": safetensors header is not a JSON object");

  const uint64_t data_start = 8 + n;
  const uint64_t buffer_size = fsize - data_start;

  Checkpoint ck;
  ck.format = "safetensors";
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::ordered_json& info = it.value();
    if (name == "__metadata__") {
      if (!info.is_object()) XLMR_THROW(path + ": safetensors __metadata__ is not a JSON object");
      ck.metadata["__metadata__"] = nlohmann::json::parse(info.dump());
      continue;
    }
    const std::string what = path + ": safetensors tensor '" + detail::printable(name) + "'";
    if (!info.is_object()) XLMR_THROW(what + " has no descriptor object");
    auto dt = info.find("dtype");
    auto sh = info.find("shape");
    auto off = info.find("data_offsets");
    if (dt == info.end() || !dt->is_string()) XLMR_THROW(what + " has no dtype string");
    if (sh == info.end() || !sh->is_array()) XLMR_THROW(what + " has no shape array");
    if (off == info.end() || !off->is_array()) XLMR_THROW(what + " has no data_offsets array");

    SourceTensor t;
    t.name = name;
    const std::string dname = dt->get<std::string>();
    if (!parse_st_dtype(dname, &t.dtype)) XLMR_THROW(what + " has unsupported dtype '" + detail::printable(dname, 32) + "'");
    const uint64_t esize = dtype_size(t.dtype);

    if (sh->size() > 64) XLMR_THROW(what + " has more than 64 dimensions");
    bool has_zero = false;
    for (const auto& d : *sh) {
      uint64_t v;
      if (!get_u64(d, &v)) XLMR_THROW(what + " has a negative or non-integer shape entry");
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) XLMR_THROW(what + " has an oversized dimension");
      if (v == 0) has_zero = true;
      t.shape.push_back(static_cast<int64_t>(v));
    }
    uint64_t nbytes = 0;
    if (!has_zero) {
      nbytes = esize;
      for (int64_t d : t.shape) {
        if (static_cast<uint64_t>(d) > kMaxBytes / nbytes) XLMR_THROW(what + " shape overflows the size of the file");
        nbytes *= static_cast<uint64_t>(d);
      }
    }

    if (off->size() != 2) XLMR_THROW(what + " data_offsets must hold exactly two integers");
    uint64_t begin, end;
    if (!get_u64((*off)[0], &begin) || !get_u64((*off)[1], &end)) {
      XLMR_THROW(what + " data_offsets are not non-negative integers");
    }
    if (begin > end) XLMR_THROW(what + " data_offsets begin after they end");
    if (end > buffer_size) {
      XLMR_THROW(what + " data ends at " + std::to_string(end) + ", past the data buffer (" +
                 std::to_string(buffer_size) + " bytes; file truncated?)");
    }
    if (end - begin != nbytes) {
      XLMR_THROW(what + " data_offsets span " + std::to_string(end - begin) + " bytes but shape and dtype need " +
                 std::to_string(nbytes));
    }
    entries.push_back({ck.tensors.size(), begin, end});
    ck.tensors.push_back(std::move(t));
  }

  // The tensors must tile the buffer exactly.
  std::vector<Entry> sorted = entries;
  std::sort(sorted.begin(), sorted.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const Entry& e : sorted) {
    const std::string name = detail::printable(ck.tensors[e.order].name);
    if (e.begin < cursor) XLMR_THROW(path + ": safetensors tensor '" + name + "' overlaps another tensor's data");
    if (e.begin > cursor) {
      XLMR_THROW(path + ": safetensors data buffer has a gap before tensor '" + name + "' (bytes " +
                 std::to_string(cursor) + ".." + std::to_string(e.begin) + " unused)");
    }
    cursor = e.end;
  }
  if (cursor != buffer_size) {
    XLMR_THROW(path + ": safetensors data buffer has " + std::to_string(buffer_size - cursor) +
               " trailing bytes not covered by any tensor");
  }

  // The bytes stay in the file until asked for (checkpoint.h).
  for (const Entry& e : entries) {
    ck.tensors[e.order].bytes = std::make_shared<FileRange>(shared_file, data_start + e.begin, e.end - e.begin);
  }
  return ck;
}

}  // namespace xlmr
