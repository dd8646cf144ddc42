// Authentication between the script's process and its workers: a shared token read from a file only its
// owner can read, never sent; each side proves it knows the token with an HMAC-SHA256 of both sides' fresh
// nonces (challenge–response in both directions, so neither a stranger nor a fake worker gets through).
#pragma once
#include <string>
#include <string_view>

namespace moreh::runtime {

constexpr size_t kNonceBytes = 32;
constexpr size_t kProofBytes = 32;  // HMAC-SHA256
constexpr size_t kTokenFileBound = 4096;

// The token in `path`, surrounding whitespace trimmed. ConfigError when the file is missing, not a regular
// file, not owned by this user, readable or writable by group or others ("chmod 600"), empty or too long.
std::string read_token_file(const std::string& path);
// A new random token (hex) for moreh-launch, and writing it to a file only this user can read.
std::string new_token();
void write_token_file(const std::string& path, const std::string& token);

std::string random_nonce();  // kNonceBytes from the OS's CSPRNG
std::string hmac_sha256(std::string_view key, std::string_view data);
bool same_proof(std::string_view a, std::string_view b);  // in constant time

// What the worker sends to show it knows the token, and what the client sends back.
std::string worker_proof(std::string_view token, std::string_view client_nonce, std::string_view worker_nonce);
std::string client_proof(std::string_view token, std::string_view client_nonce, std::string_view worker_nonce);

}  // namespace moreh::runtime
