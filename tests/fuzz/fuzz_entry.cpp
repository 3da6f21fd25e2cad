// Shared fuzz entry points; see fuzz_entry.h for the contract they check.
#include "tests/fuzz/fuzz_entry.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string_view>

#include <xxhash.h>

#include "engine/config.h"
#include "engine/error.h"
#include "engine/model.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_json.h"
#include "weights/checkpoint.h"
#include "weights/schema.h"
#include "weights/xlmr_file.h"

namespace xlmr {
namespace fuzz {

namespace {

[[noreturn]] void violation(const std::string& msg) { throw Violation(msg); }

std::string temp_dir() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp && *tmp ? tmp : "/tmp";
}

// The readers take paths: the input goes into one anonymous in-memory file per
// process (a temporary file where memfd is unavailable), named through /proc.
class ScratchFile {
 public:
  ScratchFile() {
    fd_ = ::memfd_create("xlmr-fuzz-input", MFD_CLOEXEC);
    if (fd_ >= 0) {
      path_ = "/proc/self/fd/" + std::to_string(fd_);
      return;
    }
    std::string templ = temp_dir() + "/xlmr-fuzz-XXXXXX";
    fd_ = ::mkstemp(templ.data());
    if (fd_ < 0) violation("cannot create a scratch file: " + std::string(std::strerror(errno)));
    path_ = templ;
  }
  ~ScratchFile() {
    ::close(fd_);
    if (path_.rfind("/proc/", 0) != 0) ::unlink(path_.c_str());
  }

  // Replaces the file's contents and returns its path.
  const std::string& write(const uint8_t* data, size_t size) {
    if (::ftruncate(fd_, 0) != 0) violation("cannot truncate the scratch file");
    size_t done = 0;
    while (done < size) {
      const ssize_t w = ::pwrite(fd_, data + done, size - done, off_t(done));
      if (w <= 0) violation("cannot write the scratch file: " + std::string(std::strerror(errno)));
      done += size_t(w);
    }
    return path_;
  }

 private:
  int fd_ = -1;
  std::string path_;
};

ScratchFile& scratch() {
  static ScratchFile f;
  return f;
}

// A rejection must be one non-empty line of printable text: untrusted names
// in it have to be escaped.
void check_message(const Error& e) {
  const std::string m = e.what();
  if (m.empty()) violation("xlmr::Error with an empty message");
  for (unsigned char c : m) {
    if (c < 0x20 || c == 0x7f) {
      violation("xlmr::Error message holds control character " + std::to_string(int(c)) + ": " + m);
    }
  }
}

// Runs one stage, counting an xlmr::Error as a rejection.
template <typename F>
void stage(Outcome* out, F&& f) {
  try {
    f();
    out->accepted += 1;
  } catch (const Error& e) {
    check_message(e);
    out->rejected += 1;
    out->last_error = e.what();
  }
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  while (i < s.size()) {
    const unsigned c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
    else return false;
    if (s.size() - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = cp << 6 | (p[i + k] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return false;
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

// Checks an encoding: <s> ... </s> (pair: <s> A </s></s> B </s>), within
// max_length, every id a row of the embedding table.
void check_encoding(const Encoding& e, int max_length, int max_id, bool pair, const TokenizerIds& ids) {
  const size_t specials = pair ? 4 : 2;
  if (e.ids.size() < specials) violation("encoding lacks its special tokens");
  if (max_length > 0 && e.ids.size() > size_t(max_length)) {
    violation("encoding has " + std::to_string(e.ids.size()) + " ids, max_length is " + std::to_string(max_length));
  }
  if (e.ids.front() != ids.bos || e.ids.back() != ids.eos) violation("encoding does not start with <s> and end with </s>");
  for (int32_t id : e.ids) {
    if (id < 0 || id > max_id) violation("token id " + std::to_string(id) + " outside [0, " + std::to_string(max_id) + "]");
  }
}

// ---- .xlmr ------------------------------------------------------------------

// Field offsets of the 128-byte header and the 128-byte directory entries
// (docs/weights-format.md).
constexpr size_t kFileSize = 16, kJsonOff = 24, kJsonSize = 32, kDirOff = 40, kNTensors = 48, kTokOff = 72,
                 kTokSize = 80, kTokSum = 88, kMetaSum = 96;
constexpr size_t kEntOffset = 104, kEntNBytes = 112, kEntSum = 120;

uint64_t get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}
void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
bool in_file(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

// Rewrites the file size and every checksum whose region lies inside the file.
std::vector<uint8_t> repair_xlmr(const uint8_t* data, size_t size) {
  std::vector<uint8_t> b(data, data + size);
  if (size < kXlmrHeaderSize) return b;
  uint8_t* h = b.data();
  put64(h + kFileSize, size);
  const uint64_t tok_off = get64(h + kTokOff), tok_size = get64(h + kTokSize);
  if (in_file(tok_off, tok_size, size)) put64(h + kTokSum, XXH64(h + tok_off, size_t(tok_size), 0));
  const uint64_t dir_off = get64(h + kDirOff), n = get64(h + kNTensors);
  if (dir_off <= size) {
    const uint64_t entries = std::min<uint64_t>(n, (size - dir_off) / kXlmrDirEntrySize);
    for (uint64_t i = 0; i < entries; ++i) {
      uint8_t* e = h + dir_off + i * kXlmrDirEntrySize;
      const uint64_t off = get64(e + kEntOffset), nbytes = get64(e + kEntNBytes);
      if (in_file(off, nbytes, size)) put64(e + kEntSum, XXH64(h + off, size_t(nbytes), 0));
    }
  }
  const uint64_t json_off = get64(h + kJsonOff), json_size = get64(h + kJsonSize);
  if (in_file(json_off, json_size, size) && dir_off <= size && n <= (size - dir_off) / kXlmrDirEntrySize) {
    XXH64_state_t* st = XXH64_createState();
    XXH64_reset(st, 0);
    XXH64_update(st, h, kMetaSum);
    XXH64_update(st, h + json_off, size_t(json_size));
    XXH64_update(st, h + dir_off, size_t(n * kXlmrDirEntrySize));
    put64(h + kMetaSum, XXH64_digest(st));
    XXH64_freeState(st);
  }
  return b;
}

// What Engine::load does with a file, short of building a backend.
void load_xlmr(const std::string& path) {
  std::unique_ptr<Model> m = Model::load(path);
  const ModelConfig& c = m->config();
  // Every weight pointer must lie inside the mapping or a widened copy.
  for (const TensorInfo& t : m->file().tensors()) {
    if (t.offset % kXlmrAlignment || t.nbytes != uint64_t(t.numel()) * dtype_size(t.dtype)) {
      violation("accepted tensor '" + t.name + "' is misaligned or mis-sized");
    }
  }
  if (int(m->weights().layers.size()) != c.layers) violation("layer count differs from the config");
  const std::string spm = m->file().tokenizer_model();
  if (spm.empty()) return;
  TokenizerIds ids;
  ids.bos = c.bos_id;
  ids.pad = c.pad_id;
  ids.eos = c.eos_id;
  ids.unk = c.unk_id;
  Tokenizer tok(spm, ids);
  if (tok.max_model_id() >= c.vocab_size) return;  // Engine::load refuses this with an xlmr::Error
  const Encoding e = tok.encode("Hello world, gr\xc3\xbc\xc3\x9f dich! 12345", c.max_length);
  check_encoding(e, c.max_length, c.vocab_size - 1, false, ids);
}

}  // namespace

const char* target_name(Target t) {
  switch (t) {
    case Target::xlmr: return "xlmr";
    case Target::safetensors: return "safetensors";
    case Target::torch: return "torch";
    case Target::tokenizer: return "tokenizer";
    case Target::spm_model: return "spm_model";
    case Target::tokenizer_json: return "tokenizer_json";
  }
  return "?";
}

std::vector<Target> all_targets() {
  return {Target::xlmr, Target::safetensors, Target::torch, Target::tokenizer, Target::spm_model,
          Target::tokenizer_json};
}

bool parse_target(const std::string& name, Target* out) {
  for (Target t : all_targets()) {
    if (name == target_name(t)) {
      *out = t;
      return true;
    }
  }
  return false;
}

Outcome run_xlmr(const uint8_t* data, size_t size) {
  Outcome out;
  stage(&out, [&] { load_xlmr(scratch().write(data, size)); });
  const std::vector<uint8_t> fixed = repair_xlmr(data, size);
  if (size > 0 && std::memcmp(fixed.data(), data, size) != 0) {
    stage(&out, [&] { load_xlmr(scratch().write(fixed.data(), fixed.size())); });
  }
  return out;
}

namespace {

// Opening reads no tensor bytes (weights/checkpoint.h): every tensor is read
// here too, so that the lazy, bounds-checked reads see the hostile input as
// well. An input is accepted only when all of them succeed.
void check_checkpoint(const Checkpoint& ck) {
  std::set<std::string> names;
  std::vector<uint8_t> bytes;
  for (const SourceTensor& t : ck.tensors) {
    if (!names.insert(t.name).second) violation("accepted checkpoint repeats tensor '" + t.name + "'");
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) violation("accepted tensor '" + t.name + "' has a negative dimension");
      numel *= d;
    }
    t.read(&bytes);
    if (bytes.size() != uint64_t(numel) * dtype_size(t.dtype)) {
      violation("accepted tensor '" + t.name + "' holds " + std::to_string(bytes.size()) +
                " bytes for " + std::to_string(numel) + " elements");
    }
  }
}

}  // namespace

Outcome run_safetensors(const uint8_t* data, size_t size) {
  Outcome out;
  stage(&out, [&] {
    Checkpoint ck = read_safetensors(scratch().write(data, size));
    if (ck.format != "safetensors") violation("safetensors reader reports format " + ck.format);
    check_checkpoint(ck);
  });
  return out;
}

Outcome run_torch(const uint8_t* data, size_t size) {
  Outcome out;
  stage(&out, [&] {
    Checkpoint ck = read_torch_checkpoint(scratch().write(data, size));
    if (ck.format != "torch-zip" && ck.format != "torch-legacy") violation("torch reader reports format " + ck.format);
    check_checkpoint(ck);
  });
  return out;
}

namespace {

const Tokenizer& demo_tokenizer() {
  static const std::unique_ptr<Tokenizer> tok = [] {
    const std::string path = std::string(XLMR_SOURCE_DIR) + "/scripts/demo/model/sentencepiece.bpe.model";
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    if (!in.good() && ss.str().empty()) violation("cannot read " + path);
    return std::make_unique<Tokenizer>(ss.str());
  }();
  return *tok;
}

}  // namespace

Outcome run_tokenizer(const uint8_t* data, size_t size) {
  Outcome out;
  const Tokenizer& tok = demo_tokenizer();
  const TokenizerIds ids;
  const int max_id = tok.max_model_id();
  const uint8_t ctl = size ? data[0] : 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + (size ? 1 : 0), size ? size - 1 : 0);
  const int mode = ctl >> 6;
  const int max_length = 2 + (ctl & 63);

  stage(&out, [&] {
    std::string clean;
    const bool replaced = sanitize_utf8(text, &clean);
    if (!valid_utf8(clean)) violation("sanitize_utf8 produced invalid UTF-8");
    if (replaced == valid_utf8(text)) violation("sanitize_utf8 misreports whether it replaced bytes");
    if (!replaced && clean != text) violation("sanitize_utf8 changed valid text");
    std::string again;
    if (sanitize_utf8(clean, &again) || again != clean) violation("sanitize_utf8 is not idempotent");

    bool bad = false;
    const std::vector<int32_t> pieces = tok.pieces(text, &bad);
    if (bad != replaced) violation("pieces() misreports invalid UTF-8");
    for (int32_t id : pieces) {
      if (id < 3 || id > max_id) violation("piece id " + std::to_string(id) + " is a special or out of range");
    }
    if (mode == 1) {
      const size_t cut = text.find('\xff');
      const std::string_view a = text.substr(0, cut);
      const std::string_view b = cut == std::string_view::npos ? std::string_view() : text.substr(cut + 1);
      const int pair_len = max_length + 2;
      const Encoding e = tok.encode_pair(a, b, pair_len);
      check_encoding(e, pair_len, max_id, true, ids);
      const size_t na = tok.pieces(a).size(), nb = tok.pieces(b).size();
      if (e.truncated != (na + nb > size_t(pair_len - 4))) violation("encode_pair misreports truncation");
    } else {
      const int len = mode == 3 ? 1 << 20 : max_length;
      const Encoding e = tok.encode(text, len);
      check_encoding(e, len, max_id, false, ids);
      if (e.truncated != (pieces.size() > size_t(len - 2))) violation("encode misreports truncation");
      if (e.invalid_utf8 != replaced) violation("encode misreports invalid UTF-8");
      if (!e.truncated && !std::equal(pieces.begin(), pieces.end(), e.ids.begin() + 1)) {
        violation("encode differs from pieces()");
      }
    }
  });
  return out;
}

Outcome run_spm_model(const uint8_t* data, size_t size) {
  Outcome out;
  stage(&out, [&] {
    const TokenizerIds ids;
    Tokenizer tok(std::string(reinterpret_cast<const char*>(data), size), ids);
    const int max_id = tok.max_model_id();
    if (max_id < 3) violation("tokenizer accepted with fewer than 3 pieces");
    const Encoding e = tok.encode("Hello world, gr\xc3\xbc\xc3\x9f dich! \xe4\xbd\xa0\xe5\xa5\xbd 12345 \xff", 64);
    check_encoding(e, 64, max_id, false, ids);
  });
  return out;
}

Outcome run_tokenizer_json(const uint8_t* data, size_t size) {
  Outcome out;
  stage(&out, [&] {
    const RebuiltTokenizer rt = rebuild_spm_model(std::string(reinterpret_cast<const char*>(data), size), "input");
    const TokenizerIds ids;
    Tokenizer tok(rt.spm_model, ids);
    // <s> <pad> </s> <unk> + pieces (+ <mask>) became <unk> <s> </s> + pieces.
    if (tok.spm_size() != rt.entries - 1 && tok.spm_size() != rt.entries - 2)
      violation("rebuilt model has " + std::to_string(tok.spm_size()) + " pieces from " +
                std::to_string(rt.entries) + " entries");
    const Encoding e = tok.encode("Hello world, gr\xc3\xbc\xc3\x9f dich! \xe4\xbd\xa0\xe5\xa5\xbd 12345 \xff", 64);
    check_encoding(e, 64, tok.max_model_id(), false, ids);
  });
  return out;
}

Outcome run(Target t, const uint8_t* data, size_t size) {
  switch (t) {
    case Target::xlmr: return run_xlmr(data, size);
    case Target::safetensors: return run_safetensors(data, size);
    case Target::torch: return run_torch(data, size);
    case Target::tokenizer: return run_tokenizer(data, size);
    case Target::spm_model: return run_spm_model(data, size);
    case Target::tokenizer_json: return run_tokenizer_json(data, size);
  }
  violation("unknown fuzz target");
}

std::string make_xlmr_seed(bool f16, const std::string& spm) {
  ModelConfig c;
  c.family = Family::xlmr;
  // Room for every id the tokenizer can produce (max_model_id() == pieces).
  c.vocab_size = spm.empty() ? 8 : Tokenizer(spm).spm_size() + 1;
  c.hidden = 4;
  c.ffn = 4;
  c.heads = 2;
  c.layers = 1;
  c.max_positions = 8;
  c.position_offset = 2;
  c.type_vocab_size = 1;
  c.num_labels = 2;
  c.has_pooler = !f16;
  c.max_length = 6;
  c.dtype = f16 ? DType::f16 : DType::f32;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> ud(-1.0f, 1.0f);
  std::vector<TensorToWrite> ts;
  for (const SchemaEntry& s : model_schema(c)) {
    TensorToWrite t;
    t.name = s.name;
    t.shape = s.shape;
    t.dtype = c.dtype;
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    t.data.resize(size_t(n) * dtype_size(t.dtype));
    for (int64_t i = 0; i < n; ++i) {
      const float v = ud(rng);
      if (f16) {
        const uint16_t h = f32_to_f16(v);
        std::memcpy(t.data.data() + 2 * i, &h, 2);
      } else {
        std::memcpy(t.data.data() + 4 * i, &v, 4);
      }
    }
    ts.push_back(std::move(t));
  }
  std::string templ = temp_dir() + "/xlmr-seed-XXXXXX";
  const int fd = ::mkstemp(templ.data());
  if (fd < 0) violation("cannot create a temporary file in " + temp_dir());
  ::close(fd);
  write_xlmr_file(templ, c.to_json(), ts, spm);
  std::ifstream in(templ, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  ::unlink(templ.c_str());
  return ss.str();
}

}  // namespace fuzz
}  // namespace xlmr
