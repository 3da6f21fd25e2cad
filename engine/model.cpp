#include "engine/model.h"

#include <cstring>
#include <set>

#include "engine/error.h"
#include "weights/file_io.h"
#include "weights/schema.h"

namespace xlmr {

namespace {
std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}
}  // namespace

std::unique_ptr<Model> Model::load(const std::string& path, const LoadOptions& opts, bool widen_matrices) {
  std::unique_ptr<Model> m(new Model());
  m->widen_matrices_ = widen_matrices;
  m->file_ = XlmrFile::open(path, opts);
  try {
    m->config_ = ModelConfig::from_json(m->file_->config());
  } catch (const Error& e) {
    XLMR_THROW("'" + path + "': " + e.what());
  }
  const ModelConfig& c = m->config_;

  // The file must hold exactly the schema's tensors, with the schema's shapes.
  const std::vector<SchemaEntry> schema = model_schema(c);
  std::set<std::string> wanted;
  for (const SchemaEntry& s : schema) {
    wanted.insert(s.name);
    const TensorInfo* t = m->file_->find(s.name);
    XLMR_CHECK(t, "'" + path + "': tensor '" + s.name + "' is missing");
    XLMR_CHECK(t->shape == s.shape, "'" + path + "': tensor '" + s.name + "' has shape " + shape_str(t->shape) +
                                        ", the config needs " + shape_str(s.shape));
  }
  for (const TensorInfo& t : m->file_->tensors())
    XLMR_CHECK(wanted.count(t.name), "'" + path + "': unexpected tensor '" + detail::printable(t.name) + "' for this config");

  ModelWeights& w = m->weights_;
  w.word = m->f32("emb.word");
  w.pos = m->f32("emb.pos");
  w.type0 = c.type_vocab_size > 0 ? m->f32("emb.type") : nullptr;  // row 0 is the first E floats
  if (c.norm == Norm::post) {
    w.emb_ln_g = m->f32("emb.ln.weight");
    w.emb_ln_b = m->f32("emb.ln.bias");
  } else {
    w.final_ln_g = m->f32("final_ln.weight");
    w.final_ln_b = m->f32("final_ln.bias");
  }
  for (int i = 0; i < c.layers; ++i) {
    LayerWeights l;
    l.qkv_w = m->matrix(layer_tensor(i, "attn.qkv.weight"));
    l.qkv_b = m->f32(layer_tensor(i, "attn.qkv.bias"));
    l.out_w = m->matrix(layer_tensor(i, "attn.out.weight"));
    l.out_b = m->f32(layer_tensor(i, "attn.out.bias"));
    l.ln1_g = m->f32(layer_tensor(i, "ln1.weight"));
    l.ln1_b = m->f32(layer_tensor(i, "ln1.bias"));
    l.ffn1_w = m->matrix(layer_tensor(i, "ffn1.weight"));
    l.ffn1_b = m->f32(layer_tensor(i, "ffn1.bias"));
    l.ffn2_w = m->matrix(layer_tensor(i, "ffn2.weight"));
    l.ffn2_b = m->f32(layer_tensor(i, "ffn2.bias"));
    l.ln2_g = m->f32(layer_tensor(i, "ln2.weight"));
    l.ln2_b = m->f32(layer_tensor(i, "ln2.bias"));
    w.layers.push_back(l);
  }
  if (c.has_pooler) {
    w.pooler_w = m->matrix("pooler.dense.weight");
    w.pooler_b = m->f32("pooler.dense.bias");
  }
  if (c.num_labels > 0) {
    w.head_dense_w = m->matrix("head.dense.weight");
    w.head_dense_b = m->f32("head.dense.bias");
    w.head_out_w = m->matrix("head.out.weight");
    w.head_out_b = m->f32("head.out.bias");
  }
  return m;
}

NormParams norm_params(const ModelWeights& w, const NormStep& step) {
  switch (step.which) {
    case NormStep::emb: return {w.emb_ln_g, w.emb_ln_b};
    case NormStep::ln1: return {w.layers.at(size_t(step.layer)).ln1_g, w.layers.at(size_t(step.layer)).ln1_b};
    case NormStep::ln2: return {w.layers.at(size_t(step.layer)).ln2_g, w.layers.at(size_t(step.layer)).ln2_b};
    case NormStep::final: break;
  }
  return {w.final_ln_g, w.final_ln_b};
}

const float* Model::matrix(const std::string& name) {
  const TensorInfo* t = file_->find(name);
  return widen_matrices_ || (t && t->dtype == DType::f32) ? f32(name) : nullptr;
}

const float* Model::tensor_f32(const std::string& name, std::vector<float>* scratch) const {
  const TensorInfo* t = file_->find(name);
  XLMR_CHECK(t, "tensor '" + name + "' is missing");
  if (t->dtype == DType::f32) return static_cast<const float*>(file_->data(*t));
  XLMR_CHECK(scratch, "tensor '" + name + "' is stored in 16 bits and needs a buffer to be widened into");
  scratch->resize(size_t(t->numel()));
  const auto* src = static_cast<const uint8_t*>(file_->data(*t));
  for (size_t i = 0; i < scratch->size(); ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    (*scratch)[i] = t->dtype == DType::f16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
  return scratch->data();
}

const float* Model::f32(const std::string& name) {
  const TensorInfo* t = file_->find(name);
  XLMR_CHECK(t, "tensor '" + name + "' is missing");
  if (t->dtype == DType::f32) return tensor_f32(name, nullptr);  // in place, 64-byte aligned
  return tensor_f32(name, &owned_[name]);                         // widened, kept until released
}

void Model::release_matrices() {
  auto drop = [&](const float*& p, const std::string& name) {
    owned_.erase(name);
    p = nullptr;
    if (const TensorInfo* t = file_->find(name)) file_->drop_pages(*t);  // the mapped bytes too
  };
  for (int i = 0; i < int(weights_.layers.size()); ++i) {
    LayerWeights& l = weights_.layers[size_t(i)];
    drop(l.qkv_w, layer_tensor(i, "attn.qkv.weight"));
    drop(l.out_w, layer_tensor(i, "attn.out.weight"));
    drop(l.ffn1_w, layer_tensor(i, "ffn1.weight"));
    drop(l.ffn2_w, layer_tensor(i, "ffn2.weight"));
  }
  if (weights_.pooler_w) drop(weights_.pooler_w, "pooler.dense.weight");
  if (weights_.head_dense_w) {
    drop(weights_.head_dense_w, "head.dense.weight");
    drop(weights_.head_out_w, "head.out.weight");
  }
}

}  // namespace xlmr
