#include "engine/tools/infer_input.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <iostream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace xlmr::tools {

namespace {

// An input stream buffer over a file descriptor it owns, for named inputs that
// are not regular files: it never reads past what one read() returns, so the
// bytes it holds are all in in_avail() and the rest can be polled for.
class FdBuf : public std::streambuf {
 public:
  explicit FdBuf(int fd) : fd_(fd) {}
  ~FdBuf() override { ::close(fd_); }
  FdBuf(const FdBuf&) = delete;
  FdBuf& operator=(const FdBuf&) = delete;

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    ssize_t got;
    do got = ::read(fd_, buf_, sizeof buf_);
    while (got < 0 && errno == EINTR);
    // A failed read throws, which the stream turns into its bad bit (a read
    // error is reported, never taken for the end of the input).
    if (got < 0) throw std::runtime_error(std::strerror(errno));
    if (got == 0) return traits_type::eof();
    setg(buf_, buf_, buf_ + got);
    return traits_type::to_int_type(*gptr());
  }

 private:
  int fd_;
  char buf_[1 << 16];
};

}  // namespace

LineReader::LineReader(std::vector<std::string> files, size_t max_line_bytes)
    : files_(std::move(files)), max_line_(max_line_bytes) {
  if (files_.empty()) files_.push_back("-");
  // The total is only for the progress line: unknown as soon as one input is
  // not a regular file (a pipe or a terminal).
  for (const std::string& f : files_) {
    struct stat st;
    const int rc = f == "-" ? ::fstat(STDIN_FILENO, &st) : ::stat(f.c_str(), &st);
    if (rc != 0 || !S_ISREG(st.st_mode)) {
      total_ = 0;
      break;
    }
    total_ += uint64_t(st.st_size);
  }
}

bool LineReader::next(size_t n, std::vector<Line>* out) {
  out->clear();
  std::string s;
  while (out->size() < n) {
    if (!out->empty() && !ready()) break;
    if (!in_ && !open_next()) break;
    if (read_line(&s)) {
      ++line_no_;
      bytes_ += s.size() + 1;
      if (!s.empty() && s.back() == '\r') s.pop_back();
      out->push_back({std::move(s), name_ + ":" + std::to_string(line_no_)});
      s = std::string();
    } else {
      if (in_->bad()) XLMR_THROW("error reading '" + name_ + "'");
      in_ = nullptr;
      file_.reset();
      fd_buf_.reset();
      fd_ = -1;
    }
  }
  if (total_ && bytes_ > total_) bytes_ = total_;  // a last line without its line break
  return !out->empty();
}

bool LineReader::ready() {
  int fd = fd_;
  if (!in_) {
    if (next_file_ >= files_.size()) return true;  // the end
    const std::string& f = files_[next_file_];
    if (f != "-") {
      struct stat st;
      return ::stat(f.c_str(), &st) == 0 && S_ISREG(st.st_mode);  // a missing one: open_next says so
    }
    fd = STDIN_FILENO;
  }
  if (fd < 0) return true;  // a regular file
  if (in_ && in_->rdbuf()->in_avail() > 0) return true;
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;  // bytes, or the writer's end (POLLHUP)
}

// One line into *s, without its '\n'; false at the end of the input with
// nothing read. The line is taken in pieces, so an over-long one is refused
// after max_line_ + 1 bytes, and never past its end (a pipe is read as its
// lines come).
bool LineReader::read_line(std::string* s) {
  s->clear();
  char buf[1 << 16];
  bool any = false;
  for (;;) {
    in_->getline(buf, sizeof buf);
    const size_t got = size_t(in_->gcount());  // characters taken, a '\n' included
    if (in_->bad()) XLMR_THROW("error reading '" + name_ + "'");
    any = any || got > 0;
    const bool eof = in_->eof(), full = in_->fail() && !eof;
    s->append(buf, !eof && !full ? got - 1 : got);  // without the '\n' that ended it
    XLMR_CHECK(s->size() <= max_line_,
               name_ + ":" + std::to_string(line_no_ + 1) + ": a line longer than " +
                   (max_line_ % (1 << 20) == 0 ? std::to_string(max_line_ >> 20) + " MiB"
                                               : std::to_string(max_line_) + " bytes") +
                   " (--max-line-mib raises the limit)");
    if (eof) return any;
    if (!full) return true;
    in_->clear();  // the buffer filled before the line ended: go on
  }
}

bool LineReader::open_next() {
  if (next_file_ >= files_.size()) return false;
  name_ = files_[next_file_++];
  line_no_ = 0;
  if (name_ == "-") {
    in_ = &std::cin;
    name_ = "<stdin>";
    fd_ = STDIN_FILENO;
    return true;
  }
  struct stat st;
  const bool exists = ::stat(name_.c_str(), &st) == 0;
  XLMR_CHECK(!exists || !S_ISDIR(st.st_mode), "cannot read input '" + name_ + "': it is a folder (give the files in it)");
  if (!exists || S_ISREG(st.st_mode)) {
    file_.reset(new std::ifstream(name_, std::ios::binary));
    XLMR_CHECK(*file_, "cannot open input '" + name_ + "': " + std::strerror(errno));
  } else {  // a named pipe or a device: read as its bytes come, and polled by ready()
    int fd;
    do fd = ::open(name_.c_str(), O_RDONLY | O_CLOEXEC);  // a named pipe: waits for its writer
    while (fd < 0 && errno == EINTR);
    XLMR_CHECK(fd >= 0, "cannot open input '" + name_ + "': " + std::strerror(errno));
    fd_buf_.reset(new FdBuf(fd));
    file_.reset(new std::istream(fd_buf_.get()));
    fd_ = fd;
  }
  in_ = file_.get();
  return true;
}

bool parse_input_format(const std::string& s, InputFormat* out) {
  if (s == "text") *out = InputFormat::text;
  else if (s == "ids") *out = InputFormat::ids;
  else if (s == "jsonl") *out = InputFormat::jsonl;
  else if (s == "tsv-pairs") *out = InputFormat::tsv_pairs;
  else return false;
  return true;
}

namespace {

std::vector<int32_t> parse_ids(const Line& line, const RecordOptions& o) {
  std::vector<int32_t> ids;
  const char* p = line.text.data();
  const char* end = p + line.text.size();
  while (p < end) {
    while (p < end && (*p == ' ' || *p == '\t')) ++p;
    if (p == end) break;
    long long v = 0;
    auto r = std::from_chars(p, end, v);
    const char* tok_end = p;
    while (tok_end < end && *tok_end != ' ' && *tok_end != '\t') ++tok_end;
    if (r.ec != std::errc() || r.ptr != tok_end)
      XLMR_THROW(line.where + ": '" + std::string(p, tok_end) + "' is not a token id");
    if (v < 0 || v >= o.vocab_size)
      XLMR_THROW(line.where + ": token id " + std::string(p, tok_end) + " is outside the vocabulary [0, " +
                 std::to_string(o.vocab_size) + ")");
    ids.push_back(int32_t(v));
    p = tok_end;
  }
  XLMR_CHECK(!ids.empty(), line.where + ": empty line (ids input needs at least one token id)");
  XLMR_CHECK(int(ids.size()) <= o.max_length, line.where + ": " + std::to_string(ids.size()) +
                                                  " token ids, more than the limit of " +
                                                  std::to_string(o.max_length));
  return ids;
}

// nlohmann's message without its "[json.exception...] " tag; the input is one
// line, so "at line 1, " says nothing either.
std::string json_message(const std::exception& e) {
  std::string m = e.what();
  const size_t tag = m.find("] ");
  if (m.rfind("[json.exception", 0) == 0 && tag != std::string::npos) m.erase(0, tag + 2);
  const std::string noise = "parse error at line 1, ";
  if (m.rfind(noise, 0) == 0) m.erase(0, noise.size());
  return m;
}

// "a number", "an array", "null": for messages.
std::string json_kind(const nlohmann::json& j) {
  if (j.is_null()) return "null";
  if (j.is_array() || j.is_object()) return std::string("an ") + j.type_name();
  return std::string("a ") + j.type_name();
}

std::string string_field(const nlohmann::json& j, const std::string& field, const Line& line) {
  const auto it = j.find(field);
  XLMR_CHECK(it != j.end(), line.where + ": no \"" + field + "\" field in the JSON object");
  XLMR_CHECK(it->is_string(), line.where + ": field \"" + field + "\" is " + json_kind(*it) + ", not a string");
  return it->get<std::string>();
}

}  // namespace

Record parse_record(Line* line, const RecordOptions& o) {
  Record r;
  switch (o.format) {
    case InputFormat::text:
      r.a = std::move(line->text);
      break;
    case InputFormat::ids:
      r.ids = parse_ids(*line, o);
      break;
    case InputFormat::tsv_pairs: {
      const size_t tab = line->text.find('\t');
      XLMR_CHECK(tab != std::string::npos, line->where + ": no tab (tsv-pairs input needs TEXT_A<TAB>TEXT_B)");
      XLMR_CHECK(line->text.find('\t', tab + 1) == std::string::npos,
                 line->where + ": more than one tab (tsv-pairs input needs exactly two fields, TEXT_A<TAB>TEXT_B)");
      r.a = line->text.substr(0, tab);
      r.b = line->text.substr(tab + 1);
      break;
    }
    case InputFormat::jsonl: {
      XLMR_CHECK(!line->text.empty(), line->where + ": empty line (jsonl input needs one JSON object per line)");
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line->text);
      } catch (const nlohmann::json::exception& e) {
        XLMR_THROW(line->where + ": not valid JSON: " + json_message(e));
      }
      XLMR_CHECK(j.is_object(), line->where + ": the JSON value is " + json_kind(j) + ", not an object");
      r.a = string_field(j, o.text_field, *line);
      if (!o.pair_field.empty()) r.b = string_field(j, o.pair_field, *line);
      break;
    }
  }
  return r;
}

}  // namespace xlmr::tools
