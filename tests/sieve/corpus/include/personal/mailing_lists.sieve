require ["fileinto"];
if header :is "List-ID" "Sieve discussion <sieve.ietf.org>"
{
    fileinto "lists.sieve";
}
elsif header :is "List-ID" "ietf-imapext.imc.org"
{
    fileinto "lists.imapext";
}
