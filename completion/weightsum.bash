# bash completion for weightsum (installed as share/bash-completion/completions/weightsum)
_weightsum() {
    local cur prev cmd
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    cmd=${COMP_WORDS[1]}
    local cmds="hash verify diff shard synth serve push expect demo help version"
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "$cmds -V --version --help" -- "$cur"))
        return
    fi
    case $prev in
        --layout) COMPREPLY=($(compgen -W "sglang vllm megatron transformers hf" -- "$cur")); return ;;
        --algo) COMPREPLY=($(compgen -W "sha256 fast both" -- "$cur")); return ;;
        --canonical) COMPREPLY=($(compgen -W "bf16 native" -- "$cur")); return ;;
        --dtype) COMPREPLY=($(compgen -W "f32 bf16" -- "$cur")); return ;;
        --tp|--ep|--pp|--redundant-experts|--attn-dp-size|--moe-dense-tp-size) COMPREPLY=($(compgen -W "1 2 4 8 16" -- "$cur")); return ;;
        --engine) COMPREPLY=($(compgen -W "sglang vllm" -- "$cur")); return ;;
        --device) COMPREPLY=($(compgen -W "cuda cpu" -- "$cur")); return ;;
        --selector) COMPREPLY=($(compgen -W "target draft all" -- "$cur")); return ;;
        --read) COMPREPLY=($(compgen -W "mmap pread" -- "$cur")); return ;;
        --key|--seed|-j|--jobs|--port|--host|--timeout|--rank-offset|--skip|--max-body|--max-connections) return ;;
        --config|--locate|--report|-o|--output|--dir|--expert-map)
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    local common="--help --progress --no-progress -j --jobs"
    local dump="--layout --tp --config --force"
    local opts
    case $cmd in
        hash) opts="-o --output --json --tag --canonical --algo --key -c --check --read --ep --pp --expert-map --redundant-experts --attn-dp-size --enable-dp-lm-head --moe-dense-tp-size --fused-shared-experts $dump $common" ;;
        verify) opts="--json -q --quiet --status -v --verbose --ignore-missing --strict --key
                      --canonical --locate --report --read --ep --pp --expert-map --redundant-experts --attn-dp-size --enable-dp-lm-head --moe-dense-tp-size --fused-shared-experts $dump $common" ;;
        diff) opts="--json -q --quiet --status --read --ep --pp --expert-map --redundant-experts --attn-dp-size --enable-dp-lm-head --moe-dense-tp-size --fused-shared-experts $dump $common" ;;
        shard) opts="--layout --tp --ep --pp --expert-map --redundant-experts --attn-dp-size --enable-dp-lm-head --moe-dense-tp-size --fused-shared-experts --config -o --output --force --progress --no-progress --help" ;;
        synth) opts="-o --output --dtype --seed --progress --no-progress --help" ;;
        serve) opts="$dump --ep --pp --expert-map --redundant-experts --attn-dp-size --enable-dp-lm-head --moe-dense-tp-size --fused-shared-experts --host --port --key --canonical -j --jobs --timeout --max-body
                     --max-connections --verbose --read --help" ;;
        push) opts="--rank-offset --timeout --json --canonical --algo --skip --selector
                    --layout --tp --config --engine --device -j --jobs --help" ;;
        expect) opts="--layout --tp --ep --pp --expert-map --redundant-experts --attn-dp-size --enable-dp-lm-head --moe-dense-tp-size --fused-shared-experts --config -o --output --engine --device $common" ;;
        demo) opts="--dir --keep --help" ;;
        help) COMPREPLY=($(compgen -W "$cmds" -- "$cur")); return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -o filenames -F _weightsum weightsum
