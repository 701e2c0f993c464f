require "fileinto";
if not exists ["From","Date"] { fileinto "no-date"; }
if size :over 1K { fileinto "big"; } elsif size :under 300 { fileinto "small"; }
if exists "Message-ID" { fileinto "has-id"; }
